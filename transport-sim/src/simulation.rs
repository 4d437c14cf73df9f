//! Timed runs: actions happen at virtual times drawn from the run's chooser, in
//! (time, sequence) order.

use std::rc::Rc;

use herald_core::{Node, NodeId};
use serde::Serialize;

use crate::report::RunReport;
use crate::trace::TraceMode;
use crate::world::{Action, World};
use crate::{
    ChoiceKind, Chooser, Protocol, RandomChooser, ReplayChooser, Scenario, SimError, Violation,
};

/// A timed simulation of one scenario, stepped to its end.
///
/// ```
/// use herald_core::{Node, NodeId};
/// use herald_sim::{Scenario, Script, SimOptions, Simulation};
/// let scenario = Scenario::new(8).with_request(NodeId(0), 0, Script::new("lib"));
/// let report = Simulation::<Node>::new(scenario.clone(), SimOptions::default())?.run();
/// assert!(report.completed && report.violations.is_empty());
/// let again = Simulation::<Node>::new(scenario, SimOptions::default())?.run();
/// assert_eq!(report.trace_sha256, again.trace_sha256, "same seed, same trace");
/// # Ok::<(), herald_sim::SimError>(())
/// ```
pub struct Simulation<P: Protocol = Node> {
    world: World<P>,
    chooser: RunChooser,
    deadline_ns: u64,
    max_events: u64,
    fault_kinds: Vec<FaultKind>,
    stopped: bool,
}

/// How a timed run is set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimOptions {
    /// What to keep of the trace.
    pub trace: TraceMode,
    /// Keep every choice made, for [`Simulation::replay`].
    pub record_choices: bool,
}

/// A kind of fault a run can enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Crash-stop node failures.
    Crash,
    /// Partitions that cut the job in two.
    Partition,
    /// Loss of frames in flight on failed links.
    LoseInFlight,
    /// Single links that break, noticed by both ends.
    LinkFailure,
    /// Single links that break, noticed by one end only.
    OneSidedFailure,
    /// A live node wrongly declared down by a peer.
    Suspicion,
    /// Nodes that pause and resume.
    Pause,
    /// Frames delivered twice.
    Duplicate,
}

/// Where a run stands, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Virtual time now.
    pub now_ns: u64,
    /// Actions performed.
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Top-level requests answered.
    pub answered: u64,
    /// Top-level requests made.
    pub requests: u64,
}

enum RunChooser {
    Random(Box<RandomChooser>),
    Replay(ReplayChooser),
}

impl<P: Protocol> Simulation<P> {
    /// A run whose every choice is drawn from `scenario.seed`.
    pub fn new(scenario: Scenario, options: SimOptions) -> Result<Self, SimError> {
        let random = RandomChooser::new(scenario.seed);
        let random = if options.record_choices {
            random.recording()
        } else {
            random
        };
        Self::with_chooser(scenario, RunChooser::Random(Box::new(random)), options)
    }

    /// A run whose choices are read back from a recorded list.
    pub fn replay(
        scenario: Scenario,
        choices: Vec<u64>,
        options: SimOptions,
    ) -> Result<Self, SimError> {
        Self::with_chooser(
            scenario,
            RunChooser::Replay(ReplayChooser::new(choices)),
            options,
        )
    }

    fn with_chooser(
        scenario: Scenario,
        chooser: RunChooser,
        options: SimOptions,
    ) -> Result<Self, SimError> {
        let world = World::new(Rc::new(scenario), true, options.trace)?;
        let mut simulation = Self {
            world,
            chooser,
            deadline_ns: 0,
            max_events: 0,
            fault_kinds: Vec::new(),
            stopped: false,
        };
        let faults = simulation.plan_faults();
        simulation.set_limits(faults);
        Ok(simulation)
    }

    /// Performs the next scheduled action. False once the run is over.
    pub fn step(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        let Some((at_ns, action)) = self.world.next_scheduled() else {
            self.stopped = true;
            return false;
        };
        if at_ns > self.deadline_ns || self.world.events >= self.max_events {
            let deadline_ns = self.deadline_ns;
            self.world
                .violate(Violation::Liveness { at_ns, deadline_ns });
            self.stopped = true;
            return false;
        }
        self.world.now_ns = at_ns;
        self.world.apply(action, &mut self.chooser);
        true
    }

    /// Where the run stands.
    pub fn progress(&self) -> Progress {
        let top = self.world.ledger.requests.iter().filter(|r| !r.nested);
        let (answered, requests) = top.fold((0, 0), |(a, r), request| {
            (a + u64::from(request.answer.is_some()), r + 1)
        });
        Progress {
            now_ns: self.world.now_ns,
            events: self.world.events,
            messages: self.world.net.stats.messages,
            answered,
            requests,
        }
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> RunReport {
        while self.step() {}
        self.finish()
    }

    /// Ends the run where it stands (normally after [`step`](Self::step) returned
    /// false), makes the end-of-run checks and reports.
    pub fn finish(mut self) -> RunReport {
        self.world.final_checks();
        let choices = match &self.chooser {
            RunChooser::Random(random) => random.recorded().to_vec(),
            RunChooser::Replay(_) => Vec::new(),
        };
        RunReport::from_world(&mut self.world, self.fault_kinds, choices)
    }

    /// Draws which fault kinds this run enables (all configured ones, or a random
    /// subset in swarm mode), then the victims, sides and times. Returns how many
    /// faults were planned.
    fn plan_faults(&mut self) -> u64 {
        let faults = self.world.scenario.faults.clone();
        let n = self.world.scenario.nodes;
        let chooser = &mut self.chooser;
        let mut enabled = |configured: bool, kind: FaultKind, kinds: &mut Vec<FaultKind>| {
            let on =
                configured && (!faults.swarm || chooser.choose_chance(ChoiceKind::FaultKind, 1, 2));
            if on {
                kinds.push(kind);
            }
            on
        };
        let mut kinds = Vec::new();
        let crashes = enabled(
            faults.crashes > 0 || faults.crash_ppm > 0,
            FaultKind::Crash,
            &mut kinds,
        );
        let partitions = enabled(
            faults.partitions > 0 && n > 1,
            FaultKind::Partition,
            &mut kinds,
        );
        let lose = enabled(faults.lose_in_flight, FaultKind::LoseInFlight, &mut kinds);
        let two_sided = enabled(
            faults.link_failures > 0 && n > 1,
            FaultKind::LinkFailure,
            &mut kinds,
        );
        let one_sided = enabled(
            faults.one_sided_failures > 0 && n > 1,
            FaultKind::OneSidedFailure,
            &mut kinds,
        );
        let suspicions = enabled(
            faults.suspicions > 0 && n > 1,
            FaultKind::Suspicion,
            &mut kinds,
        );
        let pauses = enabled(faults.pauses > 0, FaultKind::Pause, &mut kinds);
        let duplicates = enabled(faults.duplicates > 0, FaultKind::Duplicate, &mut kinds);
        self.fault_kinds = kinds;
        self.world.lose_in_flight = lose;
        if !duplicates {
            self.world.duplicates_left = 0;
        }
        let last_ns = faults.window_ns.saturating_sub(1);
        let mut planned = 0;
        if crashes {
            let mut candidates: Vec<NodeId> = if faults.crash_candidates.is_empty() {
                (0..n).map(NodeId).collect()
            } else {
                faults.crash_candidates.clone()
            };
            let mut victims = Vec::new();
            for _ in 0..faults.crashes.min(candidates.len() as u32) {
                let i = self
                    .chooser
                    .choose(ChoiceKind::CrashVictim, candidates.len() as u64);
                victims.push(candidates.remove(i as usize));
            }
            if faults.crash_ppm > 0 {
                let ppm = u64::from(faults.crash_ppm);
                candidates.retain(|_| {
                    self.chooser
                        .choose_chance(ChoiceKind::CrashVictim, ppm, 1_000_000)
                });
                victims.extend(candidates);
            }
            for victim in victims {
                let at_ns = self
                    .chooser
                    .choose_between(ChoiceKind::FaultTime, 0, last_ns);
                self.world.schedule(at_ns, Action::Crash(victim));
                planned += 1;
            }
        }
        if partitions {
            for _ in 0..faults.partitions {
                let at_ns = self
                    .chooser
                    .choose_between(ChoiceKind::FaultTime, 0, last_ns);
                let mut side: Vec<NodeId> = if faults.partition_side.is_empty() {
                    (0..n)
                        .map(NodeId)
                        .filter(|_| self.chooser.choose_chance(ChoiceKind::PartitionSide, 1, 2))
                        .collect()
                } else {
                    faults.partition_side.clone()
                };
                if side.is_empty() || side.len() == n as usize {
                    side = vec![NodeId(
                        self.chooser.choose(ChoiceKind::PartitionSide, u64::from(n)) as u32,
                    )];
                }
                self.world.schedule(at_ns, Action::Partition(side));
                planned += 1;
            }
        }
        let last_ns = faults.window_ns.saturating_sub(1);
        for (on, count, one_sided) in [
            (two_sided, faults.link_failures, false),
            (one_sided, faults.one_sided_failures, true),
        ] {
            for _ in 0..if on { count } else { 0 } {
                let (a, b) = self.pick_pair(&faults.failed_links);
                let at_ns = self
                    .chooser
                    .choose_between(ChoiceKind::FaultTime, 0, last_ns);
                self.world
                    .schedule(at_ns, Action::LinkFail { a, b, one_sided });
                planned += 1;
            }
        }
        for _ in 0..if suspicions { faults.suspicions } else { 0 } {
            let (observer, suspect) = self.pick_pair(&faults.suspected);
            let at_ns = self
                .chooser
                .choose_between(ChoiceKind::FaultTime, 0, last_ns);
            self.world
                .schedule(at_ns, Action::Suspect { observer, suspect });
            planned += 1;
        }
        for _ in 0..if pauses { faults.pauses } else { 0 } {
            let candidates: Vec<NodeId> = if faults.pause_candidates.is_empty() {
                (0..n).map(NodeId).collect()
            } else {
                faults.pause_candidates.clone()
            };
            let i = self
                .chooser
                .choose(ChoiceKind::FaultVictim, candidates.len() as u64);
            let at_ns = self
                .chooser
                .choose_between(ChoiceKind::FaultTime, 0, last_ns);
            self.world
                .schedule(at_ns, Action::Pause(candidates[i as usize]));
            planned += 1;
        }
        if duplicates {
            planned += u64::from(faults.duplicates);
        }
        if !(two_sided || one_sided) {
            self.world.link_failures_left = 0;
            self.world.one_sided_left = 0;
        }
        planned
    }

    /// One of `listed`, or a random pair of distinct nodes when none are listed.
    fn pick_pair(&mut self, listed: &[(NodeId, NodeId)]) -> (NodeId, NodeId) {
        if !listed.is_empty() {
            let i = self
                .chooser
                .choose(ChoiceKind::FaultVictim, listed.len() as u64);
            return listed[i as usize];
        }
        let n = u64::from(self.world.scenario.nodes);
        let a = self.chooser.choose(ChoiceKind::FaultVictim, n);
        let b = (a + 1 + self.chooser.choose(ChoiceKind::FaultVictim, n - 1)) % n;
        (NodeId(a as u32), NodeId(b as u32))
    }

    /// The liveness deadline: once faults stop, every failure is noticed within the
    /// detection delay, and each fault costs at most one more round; a round is the
    /// tree's depth down and up, every message of the run queued at one interface,
    /// and every load in the longest nesting chains.
    fn set_limits(&mut self, faults: u64) {
        let scenario = &self.world.scenario;
        let network = &scenario.network;
        let depth = u64::from(ceil_log(scenario.slots(), scenario.fanout)) + 1;
        let bound = scenario.message_bound().max(scenario.naive_message_bound());
        // A joiner replays every load, one after another.
        let loads: u64 = scenario
            .requests
            .iter()
            .map(|r| r.script.longest_load_chain_ns())
            .sum::<u64>()
            * (1 + scenario.joins.len() as u64);
        let tasks = network.task_ns * scenario.launches.len() as u64;
        let round =
            (2 * depth + 4) * network.latency_max_ns + bound * network.send_gap_ns + loads + tasks;
        let last_request = scenario
            .requests
            .iter()
            .map(|r| r.at_ns)
            .chain(scenario.launches.iter().map(|l| l.at_ns))
            .chain(scenario.joins.iter().map(|j| j.at_ns))
            .max()
            .unwrap_or(0);
        let start = last_request.max(if faults > 0 {
            scenario.faults.window_ns
        } else {
            0
        });
        let pause = if scenario.faults.pauses > 0 {
            scenario.faults.pause_max_ns.max(network.detect_max_ns)
        } else {
            0
        };
        // A one-sided failure's other end (and, with `one_detector`, every
        // transport but the first) notices by silence, ten delays late.
        let silence = if scenario.faults.one_sided_failures > 0 || scenario.faults.one_detector {
            10 * network.detect_max_ns
        } else {
            0
        };
        let pause = pause + silence;
        // A launch waiting for an answer may come a whole run later.
        let waits = scenario
            .launches
            .iter()
            .filter(|l| l.after.is_some())
            .count() as u64;
        self.deadline_ns = start + pause + network.detect_max_ns + (2 + faults + 2 * waits) * round;
        let detections = if scenario.faults.declares_down() {
            4 * u64::from(scenario.nodes).pow(2) * (1 + faults)
        } else {
            0
        };
        self.max_events = 100 * (bound + u64::from(scenario.nodes)) * (2 + faults) + detections;
    }
}

impl Chooser for RunChooser {
    fn choose(&mut self, kind: ChoiceKind, options: u64) -> u64 {
        match self {
            RunChooser::Random(random) => random.choose(kind, options),
            RunChooser::Replay(replay) => replay.choose(kind, options),
        }
    }
}

/// Runs herald on `scenario` with the seed it names, hashing the trace.
pub fn simulate(scenario: &Scenario) -> Result<RunReport, SimError> {
    Ok(Simulation::<Node>::new(scenario.clone(), SimOptions::default())?.run())
}

/// The smallest `d` with `fanout^d >= nodes`: the depth bound of herald's tree.
pub fn ceil_log(nodes: u32, fanout: u32) -> u32 {
    if fanout <= 1 {
        return nodes.saturating_sub(1);
    }
    let (nodes, fanout) = (u64::from(nodes), u64::from(fanout));
    let mut depth = 0;
    let mut reach = 1u64;
    while reach < nodes {
        reach = reach.saturating_mul(fanout);
        depth += 1;
    }
    depth
}
