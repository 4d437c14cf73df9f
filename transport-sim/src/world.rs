//! The simulated job: N nodes, their hosts and the network between them, advanced
//! one [`Action`] at a time.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use herald_core::{Config, InvocationId, Limits, NodeId, TaskRunId};

use crate::causality::Views;
use crate::host::Host;
use crate::joins::Joins;
use crate::ledger::Ledger;
use crate::network::Net;
use crate::trace::{Trace, TraceMode};
use crate::{ChoiceKind, Chooser, Protocol, Scenario, SimError, Violation};

/// One step of a simulation. A timed run schedules actions at virtual times; an
/// exhaustive exploration tries every enabled action in every reachable state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// The scenario's request with this index is made.
    Request(usize),
    /// The scenario's launch with this index is made.
    Launch(usize),
    /// The first frame in flight from `from` to `to` arrives.
    Deliver {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// The frame's sequence number (not part of the state).
        frame: u64,
    },
    /// The last frame in flight on a failed link is lost.
    Drop {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
    },
    /// A running invocation's load finishes.
    FinishInvocation {
        /// Where it runs.
        node: NodeId,
        /// Which invocation.
        id: InvocationId,
    },
    /// A running task finishes.
    FinishTask {
        /// Where it runs.
        node: NodeId,
        /// Which task run.
        run: TaskRunId,
    },
    /// The node crashes and stops.
    Crash(NodeId),
    /// Links between these nodes and all others are cut for good.
    Partition(Vec<NodeId>),
    /// `observer` learns that `failed` is gone (crashed or cut off).
    Detect {
        /// The node told.
        observer: NodeId,
        /// The node it can no longer reach.
        failed: NodeId,
    },
    /// The link between `a` and `b` breaks; `a` notices, and `b` too unless
    /// `one_sided`.
    LinkFail {
        /// The end that notices.
        a: NodeId,
        /// The other end.
        b: NodeId,
        /// Whether only `a` notices.
        one_sided: bool,
    },
    /// `observer`'s transport wrongly declares the live `suspect` down.
    Suspect {
        /// The suspecting node.
        observer: NodeId,
        /// The live node declared down.
        suspect: NodeId,
    },
    /// The node pauses: it processes nothing until it resumes.
    Pause(NodeId),
    /// The paused node continues.
    Resume(NodeId),
    /// `observer` times out on the paused `paused` and declares it down.
    Timeout {
        /// The node that times out.
        observer: NodeId,
        /// The paused node.
        paused: NodeId,
    },
    /// The first frame in flight on the link will be delivered twice.
    Duplicate {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
    },
    /// The scenario's join with this index happens: node 0 admits the process.
    Join(usize),
}

impl Action {
    /// The node whose process performs the action: nothing of it happens while
    /// that node is paused.
    fn actor(&self, scenario: &Scenario) -> Option<NodeId> {
        match self {
            Action::Request(i) => Some(scenario.requests[*i].node),
            Action::Launch(i) => Some(scenario.launches[*i].from),
            Action::Join(_) => Some(NodeId(0)),
            Action::Deliver { to, .. } => Some(*to),
            Action::FinishInvocation { node, .. } | Action::FinishTask { node, .. } => Some(*node),
            Action::Detect { observer, .. }
            | Action::Suspect { observer, .. }
            | Action::Timeout { observer, .. } => Some(*observer),
            _ => None,
        }
    }
}

/// Everything a run consists of. Cloned whole by the explorer.
#[derive(Clone)]
pub(crate) struct World<P> {
    pub(crate) scenario: Rc<Scenario>,
    pub(crate) timed: bool,
    pub(crate) now_ns: u64,
    pub(crate) nodes: Vec<P>,
    pub(crate) hosts: Vec<Host>,
    pub(crate) net: Net,
    pub(crate) ledger: Ledger,
    pub(crate) trace: Trace,
    agenda: BinaryHeap<Reverse<(u64, u64, Action)>>,
    agenda_seq: u64,
    pub(crate) violations: Vec<Violation>,
    pub(crate) requests_issued: Vec<bool>,
    pub(crate) launches_issued: Vec<bool>,
    pub(crate) crashes_left: u32,
    pub(crate) partitions: u64,
    pub(crate) link_failures_left: u32,
    pub(crate) one_sided_left: u32,
    pub(crate) suspicions_left: u32,
    pub(crate) pauses_left: u32,
    pub(crate) duplicates_left: u32,
    pub(crate) lose_in_flight: bool,
    pub(crate) events: u64,
    /// The causality oracle's knowledge of every node.
    pub(crate) views: Views,
    /// Nodes some transport declared down (`peer_down` called by the simulator).
    pub(crate) declared: BTreeSet<NodeId>,
    /// Timed: actions of each paused node, performed when it resumes.
    pub(crate) deferred: Vec<Vec<Action>>,
    /// Timed: launches whose time came but whose awaited answer has not.
    pub(crate) parked: BTreeSet<usize>,
    /// How much of a failure report travels with the scenario's frame limit.
    pub(crate) limits: Limits,
    /// The scenario's joins so far.
    pub(crate) joins: Joins,
}

impl<P: Protocol> World<P> {
    /// A job in its initial state. `timed` worlds schedule actions on an agenda;
    /// untimed ones (exploration) derive the enabled actions from their state.
    pub(crate) fn new(
        scenario: Rc<Scenario>,
        timed: bool,
        trace: TraceMode,
    ) -> Result<Self, SimError> {
        scenario.validate()?;
        let members = scenario.nodes;
        let n = scenario.slots();
        // A joiner's process starts knowing its own id and those before it.
        let configs = (0..n)
            .map(|i| {
                Config::new(NodeId(i), members.max(i + 1))
                    .and_then(|c| c.with_fanout(scenario.fanout))
                    .and_then(|c| c.with_max_frame_bytes(scenario.max_frame_bytes))
                    .map_err(|e| SimError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<Config>, SimError>>()?;
        let limits = configs[0].limits();
        let nodes: Vec<P> = configs
            .into_iter()
            .map(|config| {
                if config.node().0 < members {
                    P::start(config)
                } else {
                    P::join(config, NodeId(0))
                }
            })
            .collect();
        let mut net = Net::new(n);
        for joiner in members..n {
            net.absent[joiner as usize] = true;
        }
        let faults = &scenario.faults;
        let mut world = Self {
            timed,
            now_ns: 0,
            nodes,
            hosts: vec![Host::default(); n as usize],
            net,
            ledger: Ledger::default(),
            trace: Trace::new(trace, n, P::NAME),
            agenda: BinaryHeap::new(),
            agenda_seq: 0,
            violations: Vec::new(),
            requests_issued: vec![false; scenario.requests.len()],
            launches_issued: vec![false; scenario.launches.len()],
            crashes_left: faults.crashes,
            partitions: 0,
            link_failures_left: faults.link_failures,
            one_sided_left: faults.one_sided_failures,
            suspicions_left: faults.suspicions,
            pauses_left: faults.pauses,
            duplicates_left: faults.duplicates,
            lose_in_flight: faults.lose_in_flight,
            events: 0,
            views: Views::new(n),
            declared: BTreeSet::new(),
            deferred: vec![Vec::new(); n as usize],
            parked: BTreeSet::new(),
            limits,
            joins: Joins::new(scenario.joins.len()),
            scenario: scenario.clone(),
        };
        if timed {
            for (i, request) in world.scenario.clone().requests.iter().enumerate() {
                world.schedule(request.at_ns, Action::Request(i));
            }
            for (i, launch) in world.scenario.clone().launches.iter().enumerate() {
                if launch.inside.is_none() {
                    world.schedule(launch.at_ns, Action::Launch(i));
                }
            }
            for (i, join) in world.scenario.clone().joins.iter().enumerate() {
                world.schedule(join.at_ns, Action::Join(i));
            }
        }
        Ok(world)
    }

    /// Performs one action.
    pub(crate) fn apply(&mut self, action: Action, chooser: &mut dyn Chooser) {
        self.events += 1;
        if let Some(actor) = action.actor(&self.scenario) {
            if self.timed && self.net.is_paused(actor) {
                self.deferred[actor.0 as usize].push(action);
                return;
            }
        }
        match action {
            Action::Request(i) => self.issue_request(i, chooser),
            Action::Launch(i) => self.issue_launch(i, chooser),
            Action::Deliver { from, to, frame } => self.deliver(from, to, frame, chooser),
            Action::Drop { from, to } => self.drop_last(from, to),
            Action::FinishInvocation { node, id } => self.finish_invocation(node, id, chooser),
            Action::FinishTask { node, run } => self.finish_task(node, run, chooser),
            Action::Crash(node) => self.crash(node, chooser),
            Action::Partition(side) => self.partition(&side, chooser),
            Action::Detect { observer, failed } => self.detect(observer, failed, chooser),
            Action::LinkFail { a, b, one_sided } => self.break_link(a, b, one_sided, chooser),
            Action::Suspect { observer, suspect } => self.suspect(observer, suspect, chooser),
            Action::Pause(node) => self.pause(node, chooser),
            Action::Resume(node) => self.resume(node),
            Action::Timeout { observer, paused } => self.timeout(observer, paused, chooser),
            Action::Duplicate { from, to } => self.duplicate(from, to),
            Action::Join(i) => self.issue_join(i, chooser),
        }
    }

    /// Untimed: lets `chooser` pick one enabled action and performs it. False when
    /// nothing is enabled (a terminal state).
    pub(crate) fn step_untimed(&mut self, chooser: &mut dyn Chooser) -> bool {
        let mut actions = self.enabled_actions();
        if actions.is_empty() {
            return false;
        }
        let index = chooser.choose(ChoiceKind::NextAction, actions.len() as u64) as usize;
        let action = actions.swap_remove(index.min(actions.len() - 1));
        self.apply(action, chooser);
        true
    }

    /// Timed: the next scheduled action and its time, if any.
    pub(crate) fn next_scheduled(&mut self) -> Option<(u64, Action)> {
        self.agenda
            .pop()
            .map(|Reverse((at, _, action))| (at, action))
    }

    /// Timed: schedules `action` at `at_ns` (ties run in scheduling order). Untimed
    /// worlds keep no agenda.
    pub(crate) fn schedule(&mut self, at_ns: u64, action: Action) {
        if self.timed {
            self.agenda_seq += 1;
            self.agenda.push(Reverse((at_ns, self.agenda_seq, action)));
        }
    }

    /// Every action possible in this state, in a fixed order (exploration).
    pub(crate) fn enabled_actions(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        let scenario = &self.scenario;
        let idle = |node: NodeId| !self.net.is_down(node) && !self.net.is_paused(node);
        for (i, request) in scenario.requests.iter().enumerate() {
            if !self.requests_issued[i] && idle(request.node) {
                actions.push(Action::Request(i));
            }
        }
        for (i, launch) in scenario.launches.iter().enumerate() {
            let ready = scenario.requests.iter().enumerate().all(|(r, request)| {
                request.node != launch.from
                    || request.at_ns > launch.at_ns
                    || self.requests_issued[r]
            });
            if ready
                && launch.inside.is_none()
                && self.awaited_answer_arrived(i)
                && !self.launches_issued[i]
                && idle(launch.from)
            {
                actions.push(Action::Launch(i));
            }
        }
        if let Some(i) = self.joins.next() {
            if idle(NodeId(0)) {
                actions.push(Action::Join(i));
            }
        }
        self.net
            .enabled_deliveries(self.lose_in_flight, &mut actions);
        for (i, host) in self.hosts.iter().enumerate() {
            let node = NodeId(i as u32);
            if !idle(node) {
                continue;
            }
            actions.extend(
                host.running_invocations()
                    .map(|id| Action::FinishInvocation { node, id }),
            );
            actions.extend(
                host.running_tasks()
                    .map(|run| Action::FinishTask { node, run }),
            );
        }
        if self.crashes_left > 0 {
            let candidates = &scenario.faults.crash_candidates;
            for i in 0..scenario.slots() {
                let node = NodeId(i);
                if !self.net.is_down(node) && (candidates.is_empty() || candidates.contains(&node))
                {
                    actions.push(Action::Crash(node));
                }
            }
        }
        self.enabled_faults(&mut actions);
        let side = &scenario.faults.partition_side;
        if self.partitions < u64::from(scenario.faults.partitions) && !side.is_empty() {
            actions.push(Action::Partition(side.clone()));
        }
        actions.extend(
            self.net
                .pending_detections()
                .filter(|(observer, _)| !self.net.is_paused(*observer))
                .map(|(observer, failed)| Action::Detect { observer, failed }),
        );
        if actions.is_empty() {
            actions.extend(
                (self.net.late_detections.iter())
                    .filter(|(observer, _)| !self.net.is_paused(*observer))
                    .map(|&(observer, failed)| Action::Detect { observer, failed }),
            );
        }
        actions
    }

    /// Exploration: link failures, suspicions, pauses, resumes, time-outs and
    /// duplicates possible now.
    fn enabled_faults(&self, actions: &mut Vec<Action>) {
        let faults = &self.scenario.faults;
        let n = self.scenario.slots();
        let up = |node: NodeId| !self.net.is_down(node);
        let pairs = |listed: &[(NodeId, NodeId)]| -> Vec<(NodeId, NodeId)> {
            if listed.is_empty() {
                (0..n)
                    .flat_map(|a| (0..n).map(move |b| (NodeId(a), NodeId(b))))
                    .filter(|(a, b)| a != b)
                    .collect()
            } else {
                listed.to_vec()
            }
        };
        for (one_sided, left) in [
            (false, self.link_failures_left),
            (true, self.one_sided_left),
        ] {
            if left == 0 {
                continue;
            }
            for (a, b) in pairs(&faults.failed_links) {
                let two_sided_twice = !one_sided && faults.failed_links.is_empty() && a > b;
                if up(a) && up(b) && self.net.connected(a, b) && !two_sided_twice {
                    actions.push(Action::LinkFail { a, b, one_sided });
                }
            }
        }
        if self.suspicions_left > 0 {
            for (observer, suspect) in pairs(&faults.suspected) {
                if up(observer) && up(suspect) && !self.net.is_paused(observer) {
                    actions.push(Action::Suspect { observer, suspect });
                }
            }
        }
        for i in 0..n {
            let node = NodeId(i);
            let candidate =
                faults.pause_candidates.is_empty() || faults.pause_candidates.contains(&node);
            if self.pauses_left > 0 && candidate && up(node) && !self.net.is_paused(node) {
                actions.push(Action::Pause(node));
            }
            if self.net.is_paused(node) {
                actions.push(Action::Resume(node));
            }
        }
        actions.extend(
            self.net
                .pending_timeouts
                .iter()
                .filter(|(observer, _)| !self.net.is_paused(*observer))
                .map(|&(observer, paused)| Action::Timeout { observer, paused }),
        );
        if self.duplicates_left > 0 {
            actions.extend(
                self.net
                    .busy_links()
                    .filter(|(from, to)| up(*from) && up(*to))
                    .map(|(from, to)| Action::Duplicate { from, to }),
            );
        }
    }

    /// A digest of everything that decides the run's future and the checks still to
    /// come: nodes, hosts, frames in flight, failures, answers, message count.
    /// Times, hop clocks and frame numbers are left out, so that states reached by
    /// different interleavings compare equal.
    pub(crate) fn state_hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.nodes.hash(&mut hasher);
        self.hosts.hash(&mut hasher);
        self.net.hash(&mut hasher);
        self.ledger.hash(&mut hasher);
        self.requests_issued.hash(&mut hasher);
        self.launches_issued.hash(&mut hasher);
        self.crashes_left.hash(&mut hasher);
        self.partitions.hash(&mut hasher);
        (self.link_failures_left, self.one_sided_left).hash(&mut hasher);
        (self.suspicions_left, self.pauses_left, self.duplicates_left).hash(&mut hasher);
        self.views.hash(&mut hasher);
        self.declared.hash(&mut hasher);
        self.joins.hash(&mut hasher);
        hasher.finish()
    }

    /// Records a broken invariant (the first thousand; the rest add nothing).
    pub(crate) fn violate(&mut self, violation: Violation) {
        if self.violations.len() < 1000 {
            self.violations.push(violation);
        }
    }
}
