//! Random scenarios described by a handful of small numbers: proptest shrinks the
//! numbers, and the same numbers always build the same scenario, so one line of
//! text replays a failure exactly.

use std::fmt;
use std::str::FromStr;

use herald_core::{Config, NodeId};
use herald_sim::{Faults, Network, NodeSet, Scenario, Script};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The knobs of a random scenario. The `seed` decides everything finer: which
/// nodes request what and when, where loads fail, what nests where, the latencies.
///
/// ```
/// use sim_tests::Spec;
/// let spec = Spec::random(7);
/// let again: Spec = spec.to_string().parse().unwrap();
/// assert_eq!(spec, again);
/// assert_eq!(spec.scenario(), again.scenario());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Nodes in the job (1..=64).
    pub nodes: u32,
    /// Tree fan-out (1..=8).
    pub fanout: u32,
    /// Distinct top-level libraries (1..=3).
    pub keys: u32,
    /// Top-level requests, spread over nodes and libraries.
    pub requesters: u32,
    /// Levels of registrations nested inside each library's load (0..=3).
    pub depth: u32,
    /// Nodes on which each library's load fails.
    pub failing: u32,
    /// Nodes that crash.
    pub crashes: u32,
    /// Partitions.
    pub partitions: u32,
    /// Whether failures may lose frames in flight.
    pub lose: bool,
    /// Single links that break, noticed by both ends.
    pub links: u32,
    /// Single links that break, noticed by one end only.
    pub one_sided: u32,
    /// Live nodes wrongly declared down.
    pub suspicions: u32,
    /// Nodes that pause and resume.
    pub pauses: u32,
    /// Frames delivered twice.
    pub duplicates: u32,
    /// Whether the job runs at its smallest frame limit, with failure texts of
    /// 2,000 bytes.
    pub small_frames: bool,
    /// Whether the run enables a random subset of the fault kinds.
    pub swarm: bool,
    /// Largest one-way latency, in microseconds.
    pub latency_us: u32,
    /// Task launches.
    pub launches: u32,
    /// Seed of the finer choices and of the run.
    pub seed: u64,
}

impl Spec {
    /// Knobs drawn from `seed`: swarm testing, every fault kind configured and a
    /// random subset enabled by the run.
    pub fn random(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
        let nodes = if rng.random_bool(0.5) {
            rng.random_range(1..=8)
        } else {
            rng.random_range(1..=64)
        };
        Self {
            nodes,
            fanout: rng.random_range(1..=8),
            keys: rng.random_range(1..=3),
            requesters: rng.random_range(1..=nodes.min(8)),
            depth: rng.random_range(0..=3),
            failing: rng.random_range(0..=2),
            crashes: rng.random_range(0..=3),
            partitions: rng.random_range(0..=2),
            lose: true,
            links: rng.random_range(0..=2),
            one_sided: rng.random_range(0..=1),
            suspicions: rng.random_range(0..=1),
            pauses: rng.random_range(0..=1),
            duplicates: rng.random_range(0..=3),
            small_frames: rng.random_bool(0.3),
            swarm: true,
            latency_us: rng.random_range(1..=100),
            launches: rng.random_range(0..=3),
            seed,
        }
    }

    /// Whether the scenario can have no fault at all.
    pub fn fault_free(&self) -> bool {
        self.crashes == 0
            && self.partitions == 0
            && self.links == 0
            && self.one_sided == 0
            && self.suspicions == 0
            && self.pauses == 0
            && self.duplicates == 0
    }

    /// The scenario these knobs describe.
    pub fn scenario(&self) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let n = self.nodes.max(1);
        let heads: Vec<Script> = (0..self.keys.max(1))
            .map(|k| self.head(k, n, &mut rng))
            .collect();
        let libraries: Vec<Script> = (0..heads.len())
            .map(|k| self.with_nesting(k, &heads, n, &mut rng))
            .collect();
        let network = Network {
            latency_min_ns: 1_000,
            latency_max_ns: u64::from(self.latency_us.max(1)) * 1_000,
            send_gap_ns: 100,
            detect_min_ns: 20_000,
            detect_max_ns: 100_000,
            task_ns: 2_000,
        };
        let faults = Faults {
            crashes: self.crashes.min(n - 1),
            partitions: self.partitions,
            lose_in_flight: self.lose,
            swarm: self.swarm,
            window_ns: rng.random_range(10_000..=300_000),
            link_failures: self.links,
            one_sided_failures: self.one_sided,
            suspicions: self.suspicions,
            pauses: self.pauses,
            pause_max_ns: 300_000,
            duplicates: self.duplicates,
            ..Faults::default()
        };
        let mut scenario = Scenario::new(n)
            .with_fanout(self.fanout.max(1))
            .with_seed(self.seed)
            .with_network(network)
            .with_faults(faults);
        if self.small_frames {
            scenario = scenario
                .with_max_frame_bytes(Config::min_frame_bytes(n))
                .with_error_bytes(2_000);
        }
        for _ in 0..self.requesters.max(1) {
            let library = libraries[rng.random_range(0..libraries.len())].clone();
            let node = NodeId(rng.random_range(0..n));
            // Most requests come early and overlap; some come late, after failures
            // were noticed or the registration finished.
            let late = rng.random_bool(0.25);
            let at_ns = rng.random_range(0..=if late { 400_000 } else { 50_000 });
            scenario = scenario.with_request(node, at_ns, library);
        }
        for _ in 0..self.launches {
            let request = scenario.requests[rng.random_range(0..scenario.requests.len())].clone();
            let task = if rng.random_bool(0.8) {
                request.script.tasks[0].clone()
            } else {
                "unknown".into()
            };
            let to = NodeId(rng.random_range(0..n));
            scenario = scenario.with_launch(
                request.node,
                to,
                request.at_ns + rng.random_range(0..=5_000),
                &task,
            );
        }
        scenario
    }

    /// Library `k` without nesting: a tagged script with its own task, failing on
    /// `failing` random nodes.
    fn head(&self, k: u32, n: u32, rng: &mut ChaCha8Rng) -> Script {
        let name = format!("lib{k}.so");
        Script::new(&name)
            .with_tag(&name)
            .with_load_ns(rng.random_range(1_000..=50_000))
            .with_tasks([format!("task{k}")])
            .failing_on((0..self.failing).map(|_| NodeId(rng.random_range(0..n))))
    }

    /// Library `k` with `depth` levels of registrations nested below its load.
    /// With several libraries some nested calls register another library (a
    /// cross-load): the same library, tag, tasks and failures, one level shallower.
    fn with_nesting(&self, k: usize, heads: &[Script], n: u32, rng: &mut ChaCha8Rng) -> Script {
        let mut script = heads[k].clone();
        let mut level = &mut script;
        for d in 0..self.depth {
            let nested = if heads.len() > 1 && rng.random_bool(0.3) {
                let other = (k + 1 + rng.random_range(0..heads.len() - 1)) % heads.len();
                heads[other].clone()
            } else {
                let failing = rng.random_bool(0.1).then(|| NodeId(rng.random_range(0..n)));
                Script::new(format!("lib{k}-nested{d}.so"))
                    .with_load_ns(rng.random_range(1_000..=30_000))
                    .with_tasks([format!("task{k}-{d}")])
                    .failing_on(failing)
            };
            let on = random_node_set(n, rng);
            level
                .nested
                .push(herald_sim::NestedCall { on, script: nested });
            level = &mut level.nested.last_mut().expect("pushed").script;
        }
        script
    }
}

fn random_node_set(n: u32, rng: &mut ChaCha8Rng) -> NodeSet {
    let kind = rng.random_range(0..4);
    let count = rng.random_range(1..=3);
    let some: Vec<NodeId> = (0..count).map(|_| NodeId(rng.random_range(0..n))).collect();
    match kind {
        0 | 1 => NodeSet::All,
        2 => NodeSet::Only(some),
        _ => NodeSet::AllExcept(some),
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nodes={},fanout={},keys={},requesters={},depth={},failing={},crashes={},partitions={},lose={},links={},one_sided={},suspicions={},pauses={},duplicates={},small_frames={},swarm={},latency_us={},launches={},seed={}",
            self.nodes,
            self.fanout,
            self.keys,
            self.requesters,
            self.depth,
            self.failing,
            self.crashes,
            self.partitions,
            self.lose,
            self.links,
            self.one_sided,
            self.suspicions,
            self.pauses,
            self.duplicates,
            self.small_frames,
            self.swarm,
            self.latency_us,
            self.launches,
            self.seed
        )
    }
}

impl FromStr for Spec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut spec = Spec::random(0);
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (name, value) = field
                .split_once('=')
                .ok_or(format!("'{field}' is not name=value"))?;
            let bad = |e: &dyn fmt::Display| format!("{name}={value}: {e}");
            let number = || value.parse::<u32>().map_err(|e| bad(&e));
            let flag = || value.parse::<bool>().map_err(|e| bad(&e));
            match name {
                "nodes" => spec.nodes = number()?,
                "fanout" => spec.fanout = number()?,
                "keys" => spec.keys = number()?,
                "requesters" => spec.requesters = number()?,
                "depth" => spec.depth = number()?,
                "failing" => spec.failing = number()?,
                "crashes" => spec.crashes = number()?,
                "partitions" => spec.partitions = number()?,
                "lose" => spec.lose = flag()?,
                "links" => spec.links = number()?,
                "one_sided" => spec.one_sided = number()?,
                "suspicions" => spec.suspicions = number()?,
                "pauses" => spec.pauses = number()?,
                "duplicates" => spec.duplicates = number()?,
                "small_frames" => spec.small_frames = flag()?,
                "swarm" => spec.swarm = flag()?,
                "latency_us" => spec.latency_us = number()?,
                "launches" => spec.launches = number()?,
                "seed" => spec.seed = value.parse().map_err(|e| bad(&e))?,
                other => return Err(format!("unknown field '{other}'")),
            }
        }
        Ok(spec)
    }
}
