//! Simulated hosts: they run scripted invocations and tasks for their node, and act
//! on every output the node produces.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use herald_core::{Invocation, InvocationId, Key, NodeId, Output, TaskRequest, TaskRunId};

use crate::world::{Action, World};
use crate::{Chooser, Protocol, Script, Violation};

/// What one simulated process is running, and the tasks it has registered.
#[derive(Clone, Debug, Default, Hash)]
pub(crate) struct Host {
    /// The simulated task registry: names registered by finished loads.
    tasks: BTreeSet<String>,
    invocations: BTreeMap<InvocationId, RunningInvocation>,
    tasks_running: BTreeMap<TaskRunId, Result<Vec<u8>, String>>,
}

#[derive(Clone, Debug)]
struct RunningInvocation {
    key: Key,
    name: String,
    parent: Option<InvocationId>,
    outcome: Result<(), String>,
    tasks: Vec<String>,
    started_ns: u64,
}

/// Everything but the start time, which is not part of an explored state.
impl Hash for RunningInvocation {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.key, &self.name, self.parent).hash(state);
        (&self.outcome, &self.tasks).hash(state);
    }
}

impl Host {
    pub(crate) fn running_invocations(&self) -> impl Iterator<Item = InvocationId> + '_ {
        self.invocations.keys().copied()
    }

    pub(crate) fn running_tasks(&self) -> impl Iterator<Item = TaskRunId> + '_ {
        self.tasks_running.keys().copied()
    }

    /// The process crashed: whatever it was running is gone.
    pub(crate) fn stop(&mut self) {
        self.invocations.clear();
        self.tasks_running.clear();
    }
}

impl<P: Protocol> World<P> {
    /// Acts on every output `node` has ready, including those that acting produces.
    pub(crate) fn drain(&mut self, node: NodeId, chooser: &mut dyn Chooser) {
        while let Some(output) = self.nodes[node.0 as usize].poll_output() {
            match output {
                Output::Transmit { to, messages } => self.transmit(node, to, messages, chooser),
                Output::Invoke(invocation) => self.start_invocation(node, invocation),
                Output::Completed { request, result } => {
                    self.record_completion(node, request, result)
                }
                Output::RunTask(task) => self.start_task(node, task),
                Output::TaskCompleted { launch, outcome } => {
                    self.record_task_outcome(node, launch, outcome)
                }
                Output::PeerDown { node: down, by, .. } => {
                    self.views.peer_down(node, down);
                    self.trace.instant(
                        self.now_ns,
                        node,
                        "view: down",
                        serde_json::json!({ "node": down.0, "by": by.0 }),
                    )
                }
                Output::Fenced { by, .. } => {
                    // The host ends the process: not a crash, and every peer's
                    // transport notices its links go.
                    self.exit(node, by, chooser);
                    return;
                }
                Output::JoinFailed(failure) => {
                    // Not admitted: the node told everyone it is down; its host
                    // ends the process once that is sent.
                    self.declared.insert(node);
                    self.trace.instant(
                        self.now_ns,
                        node,
                        "join failed",
                        serde_json::json!({ "error": failure.to_string() }),
                    );
                    while let Some(output) = self.nodes[node.0 as usize].poll_output() {
                        if let Output::Transmit { to, messages } = output {
                            self.transmit(node, to, messages, chooser);
                        }
                    }
                    self.exit(node, node, chooser);
                    return;
                }
                Output::Admitted => self.joiner_admitted(node),
                Output::ViewChanged(_) => {}
            }
        }
    }

    /// The scenario's request `index` is made on its node.
    pub(crate) fn issue_request(&mut self, index: usize, chooser: &mut dyn Chooser) {
        self.requests_issued[index] = true;
        let plan = &self.scenario.requests[index];
        let node = plan.node;
        if self.net.is_down(node) {
            return;
        }
        let script = plan.script.clone();
        let registration = script.registration();
        let key = registration.key();
        self.trace.instant(
            self.now_ns,
            node,
            &format!("register {}", script.name),
            serde_json::json!({ "key": key.short() }),
        );
        match self.nodes[node.0 as usize].register(registration, None) {
            Ok(request) => {
                self.views.top_level(node, key);
                self.joins.requested(key);
                self.ledger
                    .add_request(node, request, key, &script.name, false, self.now_ns)
            }
            Err(error) => self.violate(Violation::Refused {
                node,
                error: error.to_string(),
            }),
        }
        self.drain(node, chooser);
    }

    /// The node asks its host to run a registration: decode the script, make its
    /// nested registrations now (as a constructor would during the load), and finish
    /// the load after its duration.
    fn start_invocation(&mut self, node: NodeId, invocation: Invocation) {
        let Invocation {
            id,
            key,
            registration,
            parent,
        } = invocation;
        let count = self.ledger.count_invocation(node, key);
        if count > 1 {
            self.violate(Violation::DuplicateInvocation { node, key, count });
        }
        let (script, outcome) = match Script::decode(&registration.code) {
            Ok(script) => {
                let pad = self.scenario.error_bytes;
                let outcome = script.error_on(node).map_or(Ok(()), |error| {
                    Err(if error.len() < pad {
                        format!("{error} {}", "#".repeat(pad - error.len() - 1))
                    } else {
                        error
                    })
                });
                (script, outcome)
            }
            Err(error) => (Script::new("undecodable"), Err(error.to_string())),
        };
        for call in script.nested.iter().filter(|call| call.on.contains(node)) {
            let nested = call.script.registration();
            let nested_key = nested.key();
            match self.nodes[node.0 as usize].register(nested, Some(id)) {
                Ok(request) => {
                    self.views.nested(node, key, nested_key);
                    let name = &call.script.name;
                    self.ledger
                        .add_request(node, request, nested_key, name, true, self.now_ns)
                }
                Err(error) => self.violate(Violation::Refused {
                    node,
                    error: error.to_string(),
                }),
            }
        }
        let running = RunningInvocation {
            key,
            name: script.name.clone(),
            parent,
            outcome,
            tasks: script.tasks.clone(),
            started_ns: self.now_ns,
        };
        let name = running.name.clone();
        self.hosts[node.0 as usize].invocations.insert(id, running);
        self.launch_inside(node, &name, id, key);
        self.schedule(
            self.now_ns + script.load_ns,
            Action::FinishInvocation { node, id },
        );
    }

    /// A load finishes: a successful one registers its tasks on the node.
    pub(crate) fn finish_invocation(
        &mut self,
        node: NodeId,
        id: InvocationId,
        chooser: &mut dyn Chooser,
    ) {
        let host = &mut self.hosts[node.0 as usize];
        let Some(running) = host.invocations.remove(&id) else {
            return;
        };
        if running.outcome.is_ok() {
            host.tasks.extend(running.tasks.iter().cloned());
        }
        let args = serde_json::json!({
            "key": running.key.short(),
            "invocation": id.0,
            "parent": running.parent.map(|p| p.0),
            "outcome": running.outcome.as_ref().err(),
        });
        let name = format!("invoke {}", running.name);
        self.trace
            .span(running.started_ns, self.now_ns, node, &name, args);
        if let Err(error) = self.nodes[node.0 as usize].invocation_finished(id, running.outcome) {
            self.violate(Violation::Refused {
                node,
                error: error.to_string(),
            });
        }
        self.drain(node, chooser);
    }

    /// The node hands a task to its host: it must not run before the registrations
    /// its launch required are done here, and an unknown task is an error.
    fn start_task(&mut self, node: NodeId, task: TaskRequest) {
        let TaskRequest { run, task, args } = task;
        if P::CAUSAL_LAUNCHES {
            let requires = self.ledger.launch_requires(run.origin, run.launch);
            self.check_causality(node, &task, &requires);
            self.check_replayed(node, &task);
        }
        let outcome = if self.hosts[node.0 as usize].tasks.contains(&task) {
            Ok(args)
        } else {
            Err(format!("task '{task}' is not registered on {node}"))
        };
        self.hosts[node.0 as usize]
            .tasks_running
            .insert(run, outcome);
        self.schedule(
            self.now_ns + self.scenario.network.task_ns,
            Action::FinishTask { node, run },
        );
    }

    /// A task finishes with the result its host decided when it started.
    pub(crate) fn finish_task(&mut self, node: NodeId, run: TaskRunId, chooser: &mut dyn Chooser) {
        let Some(outcome) = self.hosts[node.0 as usize].tasks_running.remove(&run) else {
            return;
        };
        if let Err(error) = self.nodes[node.0 as usize].task_finished(run, outcome) {
            self.violate(Violation::Refused {
                node,
                error: error.to_string(),
            });
        }
        self.drain(node, chooser);
    }
}
