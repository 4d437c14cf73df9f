//! Causal task launches: a task carries the registrations requested before it was
//! launched, and runs on its target only once those are done there.

use std::collections::BTreeSet;

use crate::node::{Output, TaskRequest};
use crate::{
    Key, LaunchId, Message, Node, NodeId, TaskError, TaskErrorKind, TaskOutcome, TaskRunId,
};

/// A received task waiting for registrations it requires.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HeldTask {
    task: String,
    args: Vec<u8>,
    requires: Vec<Key>,
    missing: BTreeSet<Key>,
}

impl Node {
    pub(crate) fn send_launch(
        &mut self,
        to: NodeId,
        launch: LaunchId,
        task: String,
        args: Vec<u8>,
    ) {
        let requires: Vec<Key> = self.waiters.keys().copied().collect();
        if to == self.me() {
            let run = TaskRunId { origin: to, launch };
            self.accept_task(run, task, args, requires);
        } else if self.dead.contains(&to) {
            self.emit(Output::TaskCompleted {
                launch,
                outcome: Err(TaskError {
                    node: to,
                    kind: TaskErrorKind::Unreachable,
                }),
            });
        } else {
            self.launches.insert(launch, to);
            self.send(
                to,
                Message::Launch {
                    launch,
                    task,
                    args,
                    requires,
                },
            );
        }
    }

    /// A task arrived (or was launched here): run it now, or hold it until the
    /// registrations it requires are done locally.
    pub(crate) fn accept_task(
        &mut self,
        run: TaskRunId,
        task: String,
        args: Vec<u8>,
        requires: Vec<Key>,
    ) {
        if self.held.contains_key(&run) || self.running.contains(&run) {
            return;
        }
        let missing: BTreeSet<Key> = requires
            .iter()
            .filter(|key| !self.entries.get(key).is_some_and(|e| e.is_done()))
            .copied()
            .collect();
        let held = HeldTask {
            task,
            args,
            requires,
            missing,
        };
        if held.missing.is_empty() {
            self.start_task(run, held);
        } else {
            self.held.insert(run, held);
        }
    }

    /// `key` finished locally: start the held tasks that waited only for it.
    pub(crate) fn release_tasks(&mut self, key: Key) {
        let ready: Vec<TaskRunId> = self
            .held
            .iter_mut()
            .filter_map(|(run, held)| {
                (held.missing.remove(&key) && held.missing.is_empty()).then_some(*run)
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
        if self.launches.get(&launch) == Some(&from) {
            self.launches.remove(&launch);
            self.emit(Output::TaskCompleted { launch, outcome });
        }
    }

    pub(crate) fn launches_peer_down(&mut self, dead: NodeId) {
        let lost: Vec<LaunchId> = self
            .launches
            .iter()
            .filter(|(_, to)| **to == dead)
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
        if let Some((key, error)) = failed {
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
