//! The simulated job: N nodes, their hosts and the network between them, advanced
//! one [`Action`] at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use herald_core::{Config, InvocationId, NodeId, TaskRunId};

use crate::host::Host;
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
    pub(crate) lose_in_flight: bool,
    pub(crate) events: u64,
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
        let n = scenario.nodes;
        let nodes = (0..n)
            .map(|i| {
                let config = Config::new(NodeId(i), n)
                    .and_then(|c| c.with_fanout(scenario.fanout))
                    .map_err(|e| SimError::Invalid(e.to_string()))?;
                Ok(P::start(config))
            })
            .collect::<Result<Vec<P>, SimError>>()?;
        let mut world = Self {
            timed,
            now_ns: 0,
            nodes,
            hosts: vec![Host::default(); n as usize],
            net: Net::new(n),
            ledger: Ledger::default(),
            trace: Trace::new(trace, n, P::NAME),
            agenda: BinaryHeap::new(),
            agenda_seq: 0,
            violations: Vec::new(),
            requests_issued: vec![false; scenario.requests.len()],
            launches_issued: vec![false; scenario.launches.len()],
            crashes_left: scenario.faults.crashes,
            partitions: 0,
            lose_in_flight: scenario.faults.lose_in_flight,
            events: 0,
            scenario,
        };
        if timed {
            for (i, request) in world.scenario.clone().requests.iter().enumerate() {
                world.schedule(request.at_ns, Action::Request(i));
            }
            for (i, launch) in world.scenario.clone().launches.iter().enumerate() {
                world.schedule(launch.at_ns, Action::Launch(i));
            }
        }
        Ok(world)
    }

    /// Performs one action.
    pub(crate) fn apply(&mut self, action: Action, chooser: &mut dyn Chooser) {
        self.events += 1;
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
        for (i, request) in scenario.requests.iter().enumerate() {
            if !self.requests_issued[i] && !self.net.is_crashed(request.node) {
                actions.push(Action::Request(i));
            }
        }
        for (i, launch) in scenario.launches.iter().enumerate() {
            let ready = scenario.requests.iter().enumerate().all(|(r, request)| {
                request.node != launch.from
                    || request.at_ns > launch.at_ns
                    || self.requests_issued[r]
            });
            if ready && !self.launches_issued[i] && !self.net.is_crashed(launch.from) {
                actions.push(Action::Launch(i));
            }
        }
        self.net
            .enabled_deliveries(self.lose_in_flight, &mut actions);
        for (i, host) in self.hosts.iter().enumerate() {
            let node = NodeId(i as u32);
            if self.net.is_crashed(node) {
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
            for i in 0..scenario.nodes {
                let node = NodeId(i);
                if !self.net.is_crashed(node)
                    && (candidates.is_empty() || candidates.contains(&node))
                {
                    actions.push(Action::Crash(node));
                }
            }
        }
        let side = &scenario.faults.partition_side;
        if self.partitions < u64::from(scenario.faults.partitions) && !side.is_empty() {
            actions.push(Action::Partition(side.clone()));
        }
        actions.extend(
            self.net
                .pending_detections()
                .map(|(observer, failed)| Action::Detect { observer, failed }),
        );
        actions
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
        hasher.finish()
    }

    /// Records a broken invariant (the first thousand; the rest add nothing).
    pub(crate) fn violate(&mut self, violation: Violation) {
        if self.violations.len() < 1000 {
            self.violations.push(violation);
        }
    }
}
