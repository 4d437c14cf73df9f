//! Joins: processes admitted by node 0 into the running job, and the checks on
//! them. A joiner admitted after a registration completed must run it (exactly
//! once, which the invocation count checks) before any task runs there; a
//! registration first requested after a join covers the joiner, as long as its
//! admitter (which grafts it into rounds whose root did not know it) stays up.

use std::collections::{BTreeMap, BTreeSet};

use herald_core::{Key, LocalState, NodeId, RegistrationResult, Scope};

use crate::world::World;
use crate::{Chooser, Protocol, Violation};

/// What the simulator knows of the scenario's joins.
#[derive(Clone, Debug, Default, Hash)]
pub(crate) struct Joins {
    /// Per planned join: whether node 0 has admitted it.
    pub(crate) issued: Vec<bool>,
    /// Per planned join: the keys that had a job-wide answer covering node 0
    /// when it joined.
    replay_due: Vec<BTreeSet<Key>>,
    /// Per planned join: whether it reported that it replayed the log.
    admitted: Vec<bool>,
    /// Per key: how many joins had happened when it was first requested.
    key_joins: BTreeMap<Key, usize>,
}

impl Joins {
    pub(crate) fn new(joins: usize) -> Self {
        Self {
            issued: vec![false; joins],
            replay_due: vec![BTreeSet::new(); joins],
            admitted: vec![false; joins],
            key_joins: BTreeMap::new(),
        }
    }

    /// The next join to happen: joins take ids in order.
    pub(crate) fn next(&self) -> Option<usize> {
        self.issued.iter().position(|issued| !issued)
    }

    fn done(&self) -> usize {
        self.issued.iter().filter(|issued| **issued).count()
    }

    /// A top-level request for `key` was made now.
    pub(crate) fn requested(&mut self, key: Key) {
        let done = self.done();
        self.key_joins.entry(key).or_insert(done);
    }
}

impl<P: Protocol> World<P> {
    /// Join `index` happens: its process is up, node 0 admits it.
    pub(crate) fn issue_join(&mut self, index: usize, chooser: &mut dyn Chooser) {
        if self.joins.issued[index] || self.joins.next() != Some(index) {
            return;
        }
        self.joins.issued[index] = true;
        let admitter = NodeId(0);
        let joiner = NodeId(self.scenario.nodes + index as u32);
        if self.net.is_down(admitter) {
            return;
        }
        // The joiner's transport reaches node 0 (else it could not join): it
        // comes up on node 0's side of any partition.
        self.net.join_beside(joiner, admitter);
        // Its transport notices, when it first tries them, the links to processes
        // already gone or cut off; the processes cut off from it notice too.
        for other in (0..self.scenario.slots()).map(NodeId) {
            if other == joiner || self.net.absent[other.0 as usize] {
                continue;
            }
            if self.net.is_down(other) || !self.net.connected(joiner, other) {
                self.expect_detection(joiner, other, chooser);
            }
            if !self.net.is_down(other) && !self.net.connected(joiner, other) {
                self.expect_detection(other, joiner, chooser);
            }
        }
        self.joins.replay_due[index] = (self.ledger.requests.iter())
            .filter_map(|r| r.answer.as_ref())
            // A result that names node 0 unreachable completed in a view without
            // it (across a partition, or after someone declared it down): the
            // admitter's log need not hold it.
            .filter(|a| a.result.scope == Scope::Global)
            .filter(|a| !a.result.unreachable.contains(&admitter))
            .map(|a| a.result.key)
            .collect();
        self.trace.instant(
            self.now_ns,
            joiner,
            "join",
            serde_json::json!({ "admitter": admitter.0 }),
        );
        if let Err(error) = self.nodes[0].admit(joiner) {
            self.violate(Violation::Refused {
                node: admitter,
                error: error.to_string(),
            });
        }
        self.drain(admitter, chooser);
        self.release_parked();
    }

    /// The joiner reported that it replayed the log.
    pub(crate) fn joiner_admitted(&mut self, node: NodeId) {
        if let Some(index) = self.join_index(node) {
            self.joins.admitted[index] = true;
        }
        self.trace
            .instant(self.now_ns, node, "admitted", serde_json::Value::Null);
    }

    /// A task starts on `node`: if it is a joiner, everything that had completed
    /// when it joined must be done there.
    pub(crate) fn check_replayed(&mut self, node: NodeId, task: &str) {
        let Some(index) = self.join_index(node) else {
            return;
        };
        let missing = (self.joins.replay_due[index].iter())
            .find(|key| {
                !matches!(
                    self.nodes[node.0 as usize].local_state(key),
                    Some(LocalState::Done(_))
                )
            })
            .copied();
        if let Some(key) = missing {
            self.violate(Violation::TaskBeforeReplay {
                node,
                task: task.to_string(),
                key,
            });
        }
    }

    /// Whether a job-wide result must speak for `node`: one of the job's own
    /// nodes, or a joiner that joined before the key was first requested, when
    /// the round went through node 0 (which grafts joiners the root did not know).
    pub(crate) fn result_covers(&self, node: NodeId, result: &RegistrationResult) -> bool {
        let Some(index) = self.join_index(node) else {
            return true;
        };
        let joins_before = self.joins.key_joins.get(&result.key).copied().unwrap_or(0);
        self.joins.issued[index] && index < joins_before && !result.unreachable.contains(&NodeId(0))
    }

    /// End of run: a live joiner whose admitter is up was admitted, and has run
    /// everything that had completed when it joined.
    pub(crate) fn join_final_checks(&mut self) {
        let mut found = Vec::new();
        for index in 0..self.joins.issued.len() {
            let node = NodeId(self.scenario.nodes + index as u32);
            if !self.joins.issued[index] || self.net.is_down(node) || self.net.is_down(NodeId(0)) {
                continue;
            }
            if !self.joins.admitted[index] {
                let problem = "was never admitted although it and its admitter are up".into();
                found.push(Violation::JoinIncomplete { node, problem });
                continue;
            }
            for key in &self.joins.replay_due[index] {
                if !matches!(
                    self.nodes[node.0 as usize].local_state(key),
                    Some(LocalState::Done(_))
                ) {
                    let problem = format!("was admitted without running {key:?}");
                    found.push(Violation::JoinIncomplete { node, problem });
                }
            }
        }
        found.into_iter().for_each(|v| self.violate(v));
    }

    fn join_index(&self, node: NodeId) -> Option<usize> {
        node.0
            .checked_sub(self.scenario.nodes)
            .map(|i| i as usize)
            .filter(|i| *i < self.joins.issued.len())
    }
}
