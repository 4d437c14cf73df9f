//! Every request, launch and invocation of a run, and the checks made on them: at
//! each answer (is it true of the job right now?) and at the end (is everything
//! answered and at rest?).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use herald_core::{
    Key, LaunchId, LocalState, NodeId, RegistrationResult, RequestId, Scope, TaskOutcome, cut_text,
};

use crate::world::World;
use crate::{Protocol, Violation};

/// A registration request made by a simulated host, and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The requesting node.
    pub node: NodeId,
    /// The id the node returned.
    pub request: RequestId,
    /// The registration.
    pub key: Key,
    /// Its script's name.
    pub name: String,
    /// Whether it was made from inside a running invocation.
    pub nested: bool,
    /// When it was made (virtual ns).
    pub issued_ns: u64,
    /// The answer, once there is one.
    pub answer: Option<Answer>,
}

/// How and when a request was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// When (virtual ns).
    pub at_ns: u64,
    /// The requester's hop clock then: the longest chain of messages behind it.
    pub hops: u64,
    /// The result.
    pub result: RegistrationResult,
}

/// A task launch made by a simulated host, and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRecord {
    /// The launching node.
    pub from: NodeId,
    /// The target node.
    pub to: NodeId,
    /// The id the launching node returned.
    pub launch: LaunchId,
    /// The task's name.
    pub task: String,
    /// What the causality oracle says the task must wait for on `to`: every global
    /// registration done or running on `from` when it launched, except the
    /// launching invocation's chain.
    pub requires: Vec<Key>,
    /// The scenario's launch plan this came from, if any.
    pub plan: Option<usize>,
    /// The outcome and when it arrived.
    pub outcome: Option<(u64, TaskOutcome)>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) requests: Vec<RequestRecord>,
    request_index: BTreeMap<(NodeId, RequestId), usize>,
    pub(crate) launches: Vec<LaunchRecord>,
    launch_index: BTreeMap<(NodeId, LaunchId), usize>,
    pub(crate) invocations: BTreeMap<(NodeId, Key), u32>,
    pub(crate) max_invocations: u32,
    /// Job-wide results already checked against every node: node states only move
    /// forward, so an equal result later needs no second pass over the job.
    verified: BTreeMap<Key, Vec<RegistrationResult>>,
}

impl Ledger {
    pub(crate) fn add_request(
        &mut self,
        node: NodeId,
        request: RequestId,
        key: Key,
        name: &str,
        nested: bool,
        issued_ns: u64,
    ) {
        self.request_index
            .insert((node, request), self.requests.len());
        self.requests.push(RequestRecord {
            node,
            request,
            key,
            name: name.to_string(),
            nested,
            issued_ns,
            answer: None,
        });
    }

    pub(crate) fn add_launch(
        &mut self,
        from: NodeId,
        launch: LaunchId,
        to: NodeId,
        task: &str,
        requires: Vec<Key>,
        plan: Option<usize>,
    ) {
        self.launch_index
            .insert((from, launch), self.launches.len());
        self.launches.push(LaunchRecord {
            from,
            to,
            launch,
            task: task.to_string(),
            requires,
            plan,
            outcome: None,
        });
    }

    /// Counts one more invocation of `key` on `node`; returns the count.
    pub(crate) fn count_invocation(&mut self, node: NodeId, key: Key) -> u32 {
        let count = self.invocations.entry((node, key)).or_default();
        *count += 1;
        self.max_invocations = self.max_invocations.max(*count);
        *count
    }

    pub(crate) fn launch_requires(&self, from: NodeId, launch: LaunchId) -> Vec<Key> {
        self.launch_index
            .get(&(from, launch))
            .map(|&i| self.launches[i].requires.clone())
            .unwrap_or_default()
    }
}

impl Hash for Ledger {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for r in &self.requests {
            (r.node, r.request, r.key, r.nested).hash(state);
            r.answer.as_ref().map(|a| &a.result).hash(state);
        }
        for l in &self.launches {
            (l.from, l.to, l.launch, &l.requires).hash(state);
            l.outcome.as_ref().map(|(_, outcome)| outcome).hash(state);
        }
        self.invocations.hash(state);
    }
}

impl<P: Protocol> World<P> {
    /// A request was answered: record it and check the answer against the job.
    pub(crate) fn record_completion(
        &mut self,
        node: NodeId,
        request: RequestId,
        result: RegistrationResult,
    ) {
        let Some(&index) = self.ledger.request_index.get(&(node, request)) else {
            let problem = "that it never returned";
            return self.violate(Violation::BadAnswer {
                node,
                request: request.0,
                problem,
            });
        };
        let hops = self.net.clocks[node.0 as usize];
        let record = &mut self.ledger.requests[index];
        if record.answer.is_some() {
            let problem = "twice";
            return self.violate(Violation::BadAnswer {
                node,
                request: request.0,
                problem,
            });
        }
        if self.trace.enabled() {
            let name = format!("completed {}", record.name);
            let args = serde_json::json!({
                "request": request.0,
                "key": result.key.short(),
                "hops": hops,
                "result": result.to_string(),
            });
            self.trace.instant(self.now_ns, node, &name, args);
        }
        let at_ns = self.now_ns;
        record.answer = Some(Answer {
            at_ns,
            hops,
            result: result.clone(),
        });
        match result.scope {
            Scope::Local => self.check_outcome(node, node, &result),
            Scope::Global => self.check_global(node, result),
        }
        self.release_parked();
    }

    pub(crate) fn record_task_outcome(
        &mut self,
        node: NodeId,
        launch: LaunchId,
        outcome: TaskOutcome,
    ) {
        match self.ledger.launch_index.get(&(node, launch)) {
            Some(&index) if self.ledger.launches[index].outcome.is_none() => {
                self.ledger.launches[index].outcome = Some((self.now_ns, outcome));
                self.release_parked();
            }
            _ => {
                let problem = "(a launch) twice or unknown";
                self.violate(Violation::BadAnswer {
                    node,
                    request: launch.0,
                    problem,
                });
            }
        }
    }

    /// End of run: every live node's requests and launches answered, every live
    /// node at rest, nobody named unreachable who is still up and reachable, and
    /// the message count within its bound.
    pub(crate) fn final_checks(&mut self) {
        let mut found = Vec::new();
        for r in &self.ledger.requests {
            let Some(answer) = &r.answer else {
                continue;
            };
            for &other in &answer.result.unreachable {
                if !self.net.is_down(r.node)
                    && !self.net.is_down(other)
                    && self.net.reachable(r.node, other)
                {
                    let (node, key) = (r.node, r.key);
                    found.push(Violation::FalselyUnreachable { node, key, other });
                }
            }
        }
        for r in &self.ledger.requests {
            if r.answer.is_none() && !self.net.is_down(r.node) {
                let (node, request, key, name) = (r.node, r.request.0, r.key, r.name.clone());
                found.push(Violation::Unanswered {
                    node,
                    request,
                    key,
                    name,
                });
            }
        }
        for l in &self.ledger.launches {
            if l.outcome.is_none() && !self.net.is_down(l.from) {
                let (node, launch, task) = (l.from, l.launch.0, l.task.clone());
                found.push(Violation::LaunchUnanswered { node, launch, task });
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let id = NodeId(i as u32);
            if !self.net.is_down(id) && !node.is_quiescent() {
                found.push(Violation::NotQuiescent { node: id });
            }
        }
        found.into_iter().for_each(|v| self.violate(v));
        self.join_final_checks();
        self.check_message_bound();
    }

    /// Invariant 4 in the state reached so far.
    pub(crate) fn check_message_bound(&mut self) {
        let downs = self.net.stats.by_kind.get("down").copied().unwrap_or(0);
        let (messages, bound) = (self.net.stats.messages - downs, self.message_bound());
        if messages > bound {
            self.violate(Violation::TooManyMessages { messages, bound });
        }
        // The agreed view: each node that notices a failure tells every node once,
        // and each receiver tells the failed node once.
        let n = u64::from(self.scenario.slots());
        let cut = if self.net.partitioned() { n } else { 0 };
        let noticed = (self.declared.len() as u64).max(self.net.crashed_nodes().len() as u64) + cut;
        let bound = noticed * n * (n + 1);
        if downs > bound {
            self.violate(Violation::TooManyMessages {
                messages: downs,
                bound,
            });
        }
    }

    /// The most messages the failures so far allow. Fault-free, the scenario's
    /// bound exactly. Each crash, partition, broken link, suspicion, pause, exit
    /// or duplicate may cost one more full round; each node declared down may make
    /// each requester ask a new coordinator once. (`Down`s are bounded apart.)
    pub(crate) fn message_bound(&self) -> u64 {
        if P::NAME == crate::NaiveNode::NAME {
            return self.scenario.naive_message_bound();
        }
        let base = self.scenario.message_bound();
        let faults = &self.scenario.faults;
        let n = u64::from(self.scenario.nodes);
        let crashed = self.net.crashed_nodes().len() as u64;
        let exited = self.net.exited_nodes().len() as u64;
        let cut = if self.net.partitioned() { n } else { 0 };
        let duplicated = u64::from(faults.duplicates - self.duplicates_left);
        let events = crashed
            + exited
            + self.partitions
            + u64::from(faults.link_failures - self.link_failures_left)
            + u64::from(faults.one_sided_failures - self.one_sided_left)
            + u64::from(faults.suspicions - self.suspicions_left)
            + u64::from(faults.pauses - self.pauses_left)
            + duplicated;
        let requests = self.scenario.requests.len() as u64;
        let declared = (self.declared.len() as u64).max(crashed + exited) + cut;
        base * (1 + 2 * events) + 2 * requests * declared
    }

    /// A job-wide result must be true of every node: each one not named unreachable
    /// has finished (its failure named exactly), and each one named was declared
    /// down by some node's transport (the end-of-run checks add that it is then
    /// gone, fenced or cut off).
    fn check_global(&mut self, node: NodeId, result: RegistrationResult) {
        for &other in &result.unreachable {
            if !self.declared.contains(&other) {
                let key = result.key;
                self.violate(Violation::NamedUndeclared { node, key, other });
            }
        }
        let verified = self.ledger.verified.entry(result.key).or_default();
        if verified.contains(&result) {
            return;
        }
        verified.push(result.clone());
        for i in 0..self.scenario.slots() {
            let other = NodeId(i);
            if !self.result_covers(other, &result) {
                continue;
            }
            if result.unreachable.binary_search(&other).is_err() {
                self.check_outcome(node, other, &result);
            }
        }
    }

    /// `other` must have finished `result.key`, and `result` must give its outcome.
    fn check_outcome(&mut self, node: NodeId, other: NodeId, result: &RegistrationResult) {
        let key = result.key;
        let reported = result
            .failures
            .iter()
            .find(|f| f.node == other)
            .map(|f| f.error.clone());
        match self.nodes[other.0 as usize].local_state(&key) {
            Some(LocalState::Done(actual)) => {
                if !self.same_failure(reported.as_deref(), actual.as_ref().err()) {
                    self.violate(Violation::WrongOutcome {
                        node,
                        key,
                        other,
                        reported,
                        actual,
                    });
                }
            }
            state => {
                let state = format!("{state:?}");
                self.violate(Violation::EarlyCompletion {
                    node,
                    key,
                    other,
                    state,
                });
            }
        }
    }
}

impl<P: Protocol> World<P> {
    /// Whether a result's text for a node (`reported`) gives its actual failure:
    /// both absent, or the text itself, cut to the frame limit's text length, or the
    /// note that only the first failures carry their text.
    fn same_failure(&self, reported: Option<&str>, actual: Option<&String>) -> bool {
        match (reported, actual) {
            (None, None) => true,
            (Some(reported), Some(actual)) => {
                reported == actual
                    || reported == cut_text(actual, self.limits.text_bytes)
                    || reported.starts_with("failed (error text not carried")
            }
            _ => false,
        }
    }
}
