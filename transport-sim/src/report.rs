//! What a run measured: messages, answers, hops, failures, the trace's hash, and
//! every invariant it broke.

use std::collections::BTreeMap;

use herald_core::{Key, NodeId};
use serde::Serialize;

use crate::ledger::{LaunchRecord, RequestRecord};
use crate::world::World;
use crate::{FaultKind, Protocol};

/// The measurements and verdict of one timed run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Which protocol ran: `herald` or `naive`.
    pub protocol: &'static str,
    /// Nodes in the job.
    pub nodes: u32,
    /// Distinct nodes that made a top-level request.
    pub requesters: usize,
    /// Children per node in herald's tree.
    pub fanout: u32,
    /// The root seed.
    pub seed: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages sent, by kind.
    pub messages_by_kind: BTreeMap<String, u64>,
    /// The bound on messages the run's failures allowed (invariant 4).
    pub message_bound: u64,
    /// Frames sent (several messages for one link share a frame).
    pub frames: u64,
    /// Bytes of all frames sent.
    pub bytes: u64,
    /// Frames lost to failures.
    pub lost_frames: u64,
    /// Whether every top-level request of every live node was answered.
    pub completed: bool,
    /// The most invocations of one key on one node (1 when correct).
    pub max_invocations_per_key: u32,
    /// The longest chain of messages behind any top-level answer.
    pub critical_path_hops: u64,
    /// The longest time from a top-level request to its answer (virtual ns).
    pub max_completion_ns: u64,
    /// Virtual time when the run ended.
    pub end_ns: u64,
    /// Nodes named unreachable in any top-level answer.
    pub unreachable: Vec<u32>,
    /// Nodes named failed in any top-level answer, with their error.
    pub failures: BTreeMap<u32, String>,
    /// Nodes that crashed.
    pub crashed: Vec<u32>,
    /// Nodes that were fenced (declared down by another node) and ended.
    pub fenced: Vec<u32>,
    /// Fault kinds this run enabled.
    pub fault_kinds: Vec<FaultKind>,
    /// Actions performed.
    pub events: u64,
    /// SHA-256 of the Chrome trace, hex (empty when traces are off).
    pub trace_sha256: String,
    /// Every broken invariant, as text (at most 100).
    pub violations: Vec<String>,
    /// Every request and its answer.
    #[serde(skip)]
    pub requests: Vec<RequestRecord>,
    /// Every launch and its outcome.
    #[serde(skip)]
    pub launches: Vec<LaunchRecord>,
    /// Invocations of each key on each node.
    #[serde(skip)]
    pub invocations: BTreeMap<(NodeId, Key), u32>,
    /// The trace document, when kept.
    #[serde(skip)]
    pub trace: Option<Vec<u8>>,
    /// Every choice the run made, when recorded.
    #[serde(skip)]
    pub choices: Vec<u64>,
}

/// Most violations a report lists.
const MAX_VIOLATIONS: usize = 100;

impl RunReport {
    pub(crate) fn from_world<P: Protocol>(
        world: &mut World<P>,
        fault_kinds: Vec<FaultKind>,
        choices: Vec<u64>,
    ) -> Self {
        let (trace_sha256, trace) = world.trace.finish();
        let scenario = &world.scenario;
        let stats = &world.net.stats;
        let top = || world.ledger.requests.iter().filter(|r| !r.nested);
        let completed = top().all(|r| r.answer.is_some() || world.net.is_down(r.node));
        let answers = || top().filter_map(|r| r.answer.as_ref().map(|a| (r, a)));
        let mut unreachable: Vec<u32> = answers()
            .flat_map(|(_, a)| a.result.unreachable.iter().map(|n| n.0))
            .collect();
        unreachable.sort();
        unreachable.dedup();
        let failures = answers()
            .flat_map(|(_, a)| {
                a.result
                    .failures
                    .iter()
                    .map(|f| (f.node.0, f.error.clone()))
            })
            .collect();
        Self {
            protocol: P::NAME,
            nodes: scenario.nodes,
            requesters: scenario.requesters(),
            fanout: scenario.fanout,
            seed: scenario.seed,
            messages: stats.messages,
            messages_by_kind: stats
                .by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            message_bound: world.message_bound(),
            frames: stats.frames,
            bytes: stats.bytes,
            lost_frames: stats.lost_frames,
            completed,
            max_invocations_per_key: world.ledger.max_invocations,
            critical_path_hops: answers().map(|(_, a)| a.hops).max().unwrap_or(0),
            max_completion_ns: answers()
                .map(|(r, a)| a.at_ns - r.issued_ns)
                .max()
                .unwrap_or(0),
            end_ns: world.now_ns,
            unreachable,
            failures,
            crashed: world.net.crashed_nodes().iter().map(|n| n.0).collect(),
            fenced: world.net.exited_nodes().iter().map(|n| n.0).collect(),
            fault_kinds,
            events: world.events,
            trace_sha256,
            violations: world
                .violations
                .iter()
                .take(MAX_VIOLATIONS)
                .map(|v| v.to_string())
                .collect(),
            requests: world.ledger.requests.clone(),
            launches: world.ledger.launches.clone(),
            invocations: world.ledger.invocations.clone(),
            trace,
            choices,
        }
    }

    /// True when the run broke no invariant.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}
