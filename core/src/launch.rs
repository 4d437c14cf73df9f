//! Causal task launches: a task carries every registration done or running on its
//! launching node that the target is not known to have done, and runs on its target
//! only once those are done there.

use std::collections::BTreeSet;

use crate::node::{Output, TaskRequest};
use crate::{
    Key, LaunchId, Message, Node, NodeId, Registration, TaskError, TaskErrorKind, TaskOutcome,
    TaskRunId, cut_text,
};

/// A task waiting for registrations it requires (or on its way to its target).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HeldTask {
    task: String,
    args: Vec<u8>,
    requires: Vec<Key>,
    /// Whether a required registration that failed here stops the task.
    strict: bool,
    missing: BTreeSet<Key>,
}

impl HeldTask {
    pub(crate) fn new(task: String, args: Vec<u8>, requires: Vec<Key>, strict: bool) -> Self {
        Self {
            task,
            args,
            requires,
            strict,
            missing: BTreeSet::new(),
        }
    }
}

/// A launch sent to another node and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SentLaunch {
    to: NodeId,
    /// How many global keys existed when it was sent: once the target has run the
    /// task, all of them are done there without failure. 0 when the launch did not
    /// require all of them (made from inside an invocation, or a control launch).
    entries: usize,
}

impl Node {
    /// The registrations a launch to `to` must wait for there: every global key
    /// running or done successfully here (those nested in them come with them),
    /// except those `to` is known to have done (an earlier launch that required
    /// them was run there, or their job-wide result does not name `to`) and, for a
    /// launch from inside an invocation, that invocation's key and the keys waiting
    /// on it. Also returns the entry count to remember.
    pub(crate) fn requirements_for(&self, to: NodeId, enclosing: Option<Key>) -> (Vec<Key>, usize) {
        let from = self.known_done.get(&to).copied().unwrap_or(0);
        let excluded = enclosing
            .map(|key| self.keys_waiting_on(key))
            .unwrap_or_default();
        let requires = self.global_keys[from.min(self.global_keys.len())..]
            .iter()
            .filter(|key| !excluded.contains(key))
            // A key that failed here is not something the launcher has either.
            .filter(|key| {
                !self
                    .entries
                    .get(key)
                    .is_some_and(|e| matches!(e.outcome(), Some(Err(_))))
            })
            // A result speaks for the nodes of its round's view: a joiner beyond it
            // may not have run the key yet.
            .filter(|key| match self.completed.get(key) {
                Some((result, view)) => {
                    to.0 >= *view
                        || result.failures.iter().any(|f| f.node == to)
                        || result.unreachable.contains(&to)
                }
                None => true,
            })
            .copied()
            .collect();
        (requires, self.global_keys.len())
    }

    /// Moves this node's own watermark in `known_done` past the global keys that
    /// have an outcome here: a launch to this node needs none of them (done, or
    /// failed here and so never required), so it looks only at the keys from the
    /// first one still running, not at every key this node ever had.
    pub(crate) fn advance_own_watermark(&mut self) {
        let me = self.me();
        let mut done = self.known_done.get(&me).copied().unwrap_or(0);
        while let Some(key) = self.global_keys.get(done) {
            if self.entries.get(key).and_then(|e| e.outcome()).is_none() {
                break;
            }
            done += 1;
        }
        self.known_done.insert(me, done);
    }

    pub(crate) fn send_launch(
        &mut self,
        to: NodeId,
        launch: LaunchId,
        held: HeldTask,
        entries: usize,
    ) {
        if to == self.me() {
            let run = TaskRunId { origin: to, launch };
            self.accept_task(run, held);
        } else if self.dead.contains(&to) {
            self.emit(Output::TaskCompleted {
                launch,
                outcome: Err(TaskError {
                    node: to,
                    kind: TaskErrorKind::Unreachable,
                }),
            });
        } else {
            self.launches.insert(launch, SentLaunch { to, entries });
            self.send(
                to,
                Message::Launch {
                    launch,
                    task: held.task,
                    args: held.args,
                    requires: held.requires,
                    strict: held.strict,
                },
            );
        }
    }

    /// A launch arrived from another node: ignore it if it was seen before (ids from
    /// one origin only grow, and its link is FIFO), else accept it.
    pub(crate) fn receive_launch(&mut self, run: TaskRunId, held: HeldTask) {
        if self
            .highest_launch
            .get(&run.origin)
            .is_some_and(|highest| *highest >= run.launch)
        {
            return;
        }
        self.highest_launch.insert(run.origin, run.launch);
        self.accept_task(run, held);
    }

    /// A task arrived (or was launched here): run it now, or hold it until the
    /// registrations it requires are done locally.
    pub(crate) fn accept_task(&mut self, run: TaskRunId, mut held: HeldTask) {
        if self.held.contains_key(&run) || self.running.contains(&run) {
            return;
        }
        held.missing = held
            .requires
            .iter()
            .filter(|key| !self.entries.get(key).is_some_and(|e| e.is_done()))
            .copied()
            .collect();
        self.fetch_unknown(run.origin, &held.missing);
        // A joiner holds every task until it has replayed the log.
        if held.missing.is_empty() && self.is_admitted() {
            self.start_task(run, held);
        } else {
            self.held.insert(run, held);
        }
    }

    /// A task from `origin` requires keys this node has never heard of. Their
    /// rounds may never reach it (they may have ended naming it unreachable, as
    /// when a partition made each side declare the other down), so it asks the
    /// launcher, which has them, once per key and launcher; if a round brings a
    /// key first, the answer is ignored.
    fn fetch_unknown(&mut self, origin: NodeId, missing: &BTreeSet<Key>) {
        if origin == self.me() {
            return;
        }
        let keys: Vec<Key> = missing
            .iter()
            .filter(|key| !self.entries.contains_key(key) && self.fetched.insert((**key, origin)))
            .copied()
            .collect();
        if !keys.is_empty() {
            self.send(origin, Message::Fetch { keys });
        }
    }

    /// `from` holds a task of ours that requires these keys and has never heard
    /// of them: send each registration this node has (every key a launch from
    /// here requires has an entry here), once per key and target, as a correct
    /// target asks (a repeated ask must not make a small frame a huge answer).
    pub(crate) fn handle_fetch(&mut self, from: NodeId, keys: Vec<Key>) {
        for key in keys {
            if let Some(entry) = self.entries.get(&key) {
                if !self.supplied.insert((key, from)) {
                    continue;
                }
                let registration = entry.registration.clone();
                self.send(from, Message::Supply { key, registration });
            }
        }
    }

    /// A registration a held task required, from its launcher: run it here,
    /// without taking part in any round (as for a round whose root is known
    /// down), unless a round brought it meanwhile.
    pub(crate) fn handle_supply(&mut self, key: Key, registration: Registration) {
        if !self.entries.contains_key(&key) {
            self.ensure_invoked_global(key, &registration);
        }
    }

    /// A joiner finished replaying the log: start the tasks that waited only for it.
    pub(crate) fn release_admitted(&mut self) {
        let ready: Vec<TaskRunId> = self
            .held
            .iter()
            .filter(|(_, held)| held.missing.is_empty())
            .map(|(run, _)| *run)
            .collect();
        for run in ready {
            if let Some(held) = self.held.remove(&run) {
                self.start_task(run, held);
            }
        }
    }

    /// `key` finished locally: start the held tasks that waited only for it.
    pub(crate) fn release_tasks(&mut self, key: Key) {
        let admitted = self.is_admitted();
        let ready: Vec<TaskRunId> = self
            .held
            .iter_mut()
            .filter_map(|(run, held)| {
                (held.missing.remove(&key) && held.missing.is_empty() && admitted).then_some(*run)
            })
            .collect();
        for run in ready {
            if let Some(held) = self.held.remove(&run) {
                self.start_task(run, held);
            }
        }
    }

    pub(crate) fn answer_task(&mut self, run: TaskRunId, outcome: Result<Vec<u8>, TaskErrorKind>) {
        let node = self.me();
        let outcome: TaskOutcome = outcome.map_err(|kind| TaskError { node, kind });
        if run.origin == node {
            self.emit(Output::TaskCompleted {
                launch: run.launch,
                outcome,
            });
        } else {
            self.send(
                run.origin,
                Message::TaskResult {
                    launch: run.launch,
                    outcome,
                },
            );
        }
    }

    pub(crate) fn handle_task_result(
        &mut self,
        from: NodeId,
        launch: LaunchId,
        outcome: TaskOutcome,
    ) {
        let Some(sent) = self.launches.get(&launch).copied() else {
            return;
        };
        if sent.to != from {
            return;
        }
        self.launches.remove(&launch);
        // The target ran the task (strict) only once everything it required was
        // done there without failure. A refusal (`RequirementFailed`) says one of
        // them failed there: those keys must keep being required.
        let ran = match &outcome {
            Ok(_) => true,
            Err(TaskError { kind, .. }) => matches!(kind, TaskErrorKind::Failed(_)),
        };
        if ran {
            let known = self.known_done.entry(from).or_default();
            *known = (*known).max(sent.entries);
        }
        self.emit(Output::TaskCompleted { launch, outcome });
    }

    pub(crate) fn launches_peer_down(&mut self, dead: NodeId) {
        let lost: Vec<LaunchId> = self
            .launches
            .iter()
            .filter(|(_, sent)| sent.to == dead)
            .map(|(launch, _)| *launch)
            .collect();
        for launch in lost {
            self.launches.remove(&launch);
            self.emit(Output::TaskCompleted {
                launch,
                outcome: Err(TaskError {
                    node: dead,
                    kind: TaskErrorKind::Unreachable,
                }),
            });
        }
        // Nobody is left to answer: drop what the dead node launched here.
        self.held.retain(|run, _| run.origin != dead);
    }

    fn start_task(&mut self, run: TaskRunId, held: HeldTask) {
        let failed = held.requires.iter().find_map(|key| {
            match self.entries.get(key).and_then(|e| e.outcome()) {
                Some(Err(error)) => Some((*key, error.clone())),
                _ => None,
            }
        });
        if let Some((key, error)) = failed.filter(|_| held.strict) {
            let error = cut_text(&error, self.limits().text_bytes);
            self.answer_task(run, Err(TaskErrorKind::RequirementFailed { key, error }));
            return;
        }
        self.running.insert(run);
        self.emit(Output::RunTask(TaskRequest {
            run,
            task: held.task,
            args: held.args,
        }));
    }
}

impl Node {
    /// `key` and every key that waits, through nesting, for it to finish.
    fn keys_waiting_on(&self, key: Key) -> BTreeSet<Key> {
        let mut found = BTreeSet::new();
        let mut stack = vec![key];
        while let Some(key) = stack.pop() {
            if found.insert(key) {
                if let Some(entry) = self.entries.get(&key) {
                    stack.extend(entry.dependents.iter().copied());
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Node, NodeId, Registration};

    fn registration(name: &str) -> Registration {
        Registration::new(name.as_bytes().to_vec(), Vec::new())
    }

    /// A launch to this node skips the keys done here, however many, by the
    /// watermark, and requires the one still running (and those after it).
    #[test]
    fn a_launch_here_looks_only_past_the_keys_done_here() {
        let config = Config::new(NodeId(0), 1).expect("a config");
        let mut node = Node::new(config);
        let mut invocations = Vec::new();
        for name in ["a", "b", "c", "d"] {
            node.register(registration(name), None).expect("register");
        }
        while let Some(output) = node.poll_output() {
            if let crate::Output::Invoke(invocation) = output {
                invocations.push(invocation);
            }
        }
        assert_eq!(invocations.len(), 4);
        // a, b and d finish; c is still running.
        for index in [0, 1, 3] {
            node.invocation_finished(invocations[index].id, Ok(()))
                .expect("finish");
        }
        node.advance_own_watermark();
        assert_eq!(node.known_done.get(&NodeId(0)), Some(&2));
        let (requires, _) = node.requirements_for(NodeId(0), None);
        assert_eq!(requires, vec![invocations[2].key]);
        // c fails: nothing is required any more, and the watermark passes all.
        node.invocation_finished(invocations[2].id, Err("no".into()))
            .expect("finish");
        node.advance_own_watermark();
        assert_eq!(node.known_done.get(&NodeId(0)), Some(&4));
        assert!(node.requirements_for(NodeId(0), None).0.is_empty());
    }
}
