//! Task launches made by simulated hosts: at a time, once an awaited answer has
//! arrived, or from inside a running invocation. Each records what the causality
//! oracle says the task must wait for on its target.

use herald_core::{InvocationId, Key, LocalState, NodeId};

use crate::world::{Action, World};
use crate::{After, Chooser, Protocol, Violation};

impl<P: Protocol> World<P> {
    /// The scenario's launch `index` is made now, unless the answer it waits for
    /// has not arrived yet (a timed run then parks it until it does).
    pub(crate) fn issue_launch(&mut self, index: usize, chooser: &mut dyn Chooser) {
        if self.launches_issued[index] {
            return;
        }
        if !self.awaited_answer_arrived(index) {
            self.parked.insert(index);
            return;
        }
        let from = self.scenario.launches[index].from;
        self.make_launch(index, None);
        self.drain(from, chooser);
    }

    /// Launches made from inside the invocation `id` of script `name` (key `key`)
    /// that just started on `node`. The caller drains the node.
    pub(crate) fn launch_inside(&mut self, node: NodeId, name: &str, id: InvocationId, key: Key) {
        let plans: Vec<usize> = (self.scenario.launches.iter().enumerate())
            .filter(|(i, plan)| {
                plan.from == node
                    && plan.inside.as_deref() == Some(name)
                    && !self.launches_issued[*i]
            })
            .map(|(i, _)| i)
            .collect();
        for index in plans {
            self.make_launch(index, Some((id, key)));
        }
    }

    /// Whether the answer launch `index` waits for (if any) has arrived.
    pub(crate) fn awaited_answer_arrived(&self, index: usize) -> bool {
        let plan = &self.scenario.launches[index];
        // A launch to a joiner waits until it has joined.
        let joined = plan
            .to
            .0
            .checked_sub(self.scenario.nodes)
            .is_none_or(|i| self.joins.issued.get(i as usize).copied().unwrap_or(false));
        if !joined {
            return false;
        }
        match plan.after {
            None => true,
            Some(After::Answer(r)) => {
                let request = &self.scenario.requests[r];
                self.requests_issued[r]
                    && self.ledger.requests.iter().any(|record| {
                        record.node == request.node
                            && !record.nested
                            && record.key == request.script.registration().key()
                            && record.answer.is_some()
                    })
            }
            Some(After::Launch(l)) => {
                let earlier = &self.scenario.launches[l];
                self.launches_issued[l]
                    && self.ledger.launches.iter().any(|record| {
                        record.plan == Some(l)
                            && record.from == earlier.from
                            && record.outcome.is_some()
                    })
            }
        }
    }

    /// Timed: an answer arrived; parked launches that waited for it happen now.
    pub(crate) fn release_parked(&mut self) {
        let ready: Vec<usize> = (self.parked.iter().copied())
            .filter(|i| self.awaited_answer_arrived(*i))
            .collect();
        for index in ready {
            self.parked.remove(&index);
            self.schedule(self.now_ns, Action::Launch(index));
        }
    }

    fn make_launch(&mut self, index: usize, inside: Option<(InvocationId, Key)>) {
        self.launches_issued[index] = true;
        let plan = self.scenario.launches[index].clone();
        if self.net.is_down(plan.from) {
            return;
        }
        // A key that failed on the launcher is not something it has either: only
        // keys running or done successfully there travel.
        let launcher = &self.nodes[plan.from.0 as usize];
        let requires: Vec<Key> = (self.views)
            .requirements(plan.from, inside.map(|(_, key)| key))
            .into_iter()
            .filter(|key| !matches!(launcher.local_state(key), Some(LocalState::Done(Err(_)))))
            .collect();
        match self.nodes[plan.from.0 as usize].launch(
            plan.to,
            plan.task.clone(),
            plan.task.clone().into_bytes(),
            inside.map(|(id, _)| id),
        ) {
            Ok(launch) => self.ledger.add_launch(
                plan.from,
                launch,
                plan.to,
                &plan.task,
                requires,
                Some(index),
            ),
            Err(error) => self.violate(Violation::Refused {
                node: plan.from,
                error: error.to_string(),
            }),
        }
    }
}
