//! Making a registration global: requests to the key's coordinator, dissemination
//! down its tree, acknowledgements aggregated on the way up, answers to requesters,
//! and recovery when nodes go down.

use std::collections::BTreeSet;

use crate::node::Output;
use crate::{
    Key, Limits, Message, Node, NodeId, Registration, RegistrationResult, Report, RequestId, Tree,
    cut_text,
};

/// This node's part in disseminating one key down the tree rooted at one coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Round {
    /// Where the acknowledgement goes; `None` at the root.
    parent: Option<NodeId>,
    /// Children (or adopted grandchildren) whose acknowledgement is outstanding.
    pending: BTreeSet<NodeId>,
    /// Failures and unreachable nodes of the subtree so far.
    report: Report,
    /// Whether this subtree's acknowledgement has been sent (or, at the root, the
    /// registration completed).
    acknowledged: bool,
    /// The root's view size when it started the round: the tree spans `0..view`.
    view: u32,
}

impl Round {
    pub(crate) fn is_acknowledged(&self) -> bool {
        self.acknowledged
    }
}

/// Local requests waiting for a key's job-wide completion, and who was asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Waiters {
    coordinator: NodeId,
    requests: Vec<RequestId>,
    /// Set when the request offered the coordinator this node's own outcome
    /// (`Message::Ran`) instead of its part in the round.
    offer: Option<Offer>,
}

/// A requester's offer to report its own run to the coordinator (see `Message::Ran`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Offer {
    /// The requester's view size when it offered: the tree it is a leaf child in.
    view: u32,
    /// Whether `Ran` has been sent.
    sent: bool,
}

/// Whether `node` can stand for its part in the round of `tree` over `view` with
/// `Ran` under an offer made over `offered`: it is a child of the root with no
/// children, so its own outcome is its subtree's, and its view did not know of
/// nodes the round does not (it grafts no joiners below itself).
fn ran_stands_for_ack(tree: &Tree, view: u32, node: NodeId, offered: u32) -> bool {
    node.0 < view && offered <= view && tree.is_childless_child_of_root(node)
}

impl Node {
    /// A top-level request: run here now, and have the coordinator run it everywhere.
    pub(crate) fn register_global(
        &mut self,
        key: Key,
        registration: Registration,
        request: RequestId,
    ) {
        if let Some((result, _)) = self.completed.get(&key) {
            let result = result.clone();
            self.emit(Output::Completed { request, result });
            return;
        }
        self.ensure_invoked_global(key, &registration);
        if let Some(waiters) = self.waiters.get_mut(&key) {
            waiters.requests.push(request);
            return;
        }
        let coordinator = self.coordinator_for(key);
        self.waiters.insert(
            key,
            Waiters {
                coordinator,
                requests: vec![request],
                offer: None,
            },
        );
        self.ask_coordinator(key, coordinator);
    }

    pub(crate) fn handle_request(
        &mut self,
        from: NodeId,
        key: Key,
        registration: Registration,
        offer: Option<u32>,
    ) {
        if let Some((result, view)) = self.completed.get(&key) {
            // Once per requester: a correct one asks each coordinator once, and a
            // repeated ask must not make a small frame a huge answer.
            if !self.answered.insert((key, from)) {
                return;
            }
            let (report, view) = (report_of(result, self.limits()), *view);
            self.send(from, Message::Complete { key, view, report });
            return;
        }
        self.requesters.entry(key).or_default().insert(from);
        self.ensure_invoked_global(key, &registration);
        self.coordinate(key, offer.map(|view| (from, view)));
    }

    /// `Ran` from a requester that offered it: its part in the round rooted here,
    /// when it stands for one (otherwise the requester takes part as usual).
    pub(crate) fn handle_ran(&mut self, from: NodeId, key: Key, view: u32, error: Option<String>) {
        let me = self.me();
        let Some(round) = self.rounds.get(&(key, me)) else {
            return;
        };
        let tree = self.tree(me, round.view);
        if !round.pending.contains(&from) || !ran_stands_for_ack(&tree, round.view, from, view) {
            return;
        }
        let mut report = Report::default();
        if let Some(error) = error {
            report.add_failure(from, &error, self.limits());
        }
        self.handle_ack(from, key, me, report);
    }

    pub(crate) fn handle_disseminate(
        &mut self,
        from: NodeId,
        key: Key,
        root: NodeId,
        view: u32,
        registration: Registration,
    ) {
        if root == self.me() {
            return;
        }
        self.learn_size(view);
        if self.dead.contains(&root) {
            // The round leads nowhere, but the sender holds the key and may launch
            // tasks that require it here: run it, without taking part. Joiners
            // grafted here would have had it from this round: pass it on.
            self.ensure_invoked_global(key, &registration);
            let grafted: Vec<NodeId> = self.admitted.range(NodeId(view)..).copied().collect();
            for joiner in grafted {
                let registration = registration.clone();
                self.send(
                    joiner,
                    Message::Disseminate {
                        key,
                        root,
                        view,
                        registration,
                    },
                );
            }
            return;
        }
        let me = self.me();
        let tree = self.tree(root, view);
        if let Some(round) = self.rounds.get_mut(&(key, root)) {
            // A second copy comes from an ancestor adopting this subtree after our
            // parent went down: acknowledge to it from now on. A late copy from the
            // dead parent itself is not an ancestor of the adopter and is ignored.
            // A joiner grafted below its admitter is in no tree: nobody adopts it.
            let in_tree = |n: NodeId| n.0 < round.view;
            if let Some(parent) = round.parent {
                if parent != from
                    && in_tree(me)
                    && in_tree(from)
                    && in_tree(parent)
                    && tree.is_ancestor(from, parent)
                {
                    round.parent = Some(from);
                    if round.acknowledged {
                        let report = round.report.clone();
                        self.send(from, Message::Ack { key, root, report });
                    }
                }
            }
            return;
        }
        self.ensure_invoked_global(key, &registration);
        let mut children: Vec<NodeId> = if me.0 < view {
            tree.children(me).collect()
        } else {
            Vec::new()
        };
        // Joiners admitted here that the root did not know of hang below this node.
        children.extend(self.admitted.range(NodeId(view)..).copied());
        // The root took this node's `Ran` for its part (under the same rule).
        let ran = self.waiters.get(&key).is_some_and(|waiters| {
            waiters.coordinator == root
                && from == root
                && children.is_empty()
                && waiters.offer.is_some_and(|offer| {
                    offer.sent && ran_stands_for_ack(&tree, view, me, offer.view)
                })
        });
        self.rounds.insert(
            (key, root),
            Round {
                parent: Some(from),
                pending: BTreeSet::new(),
                report: Report::default(),
                acknowledged: ran,
                view,
            },
        );
        self.spread(key, root, children);
        self.check_round(key, root);
    }

    /// The view of this node's round for (`key`, `root`), if it takes part in one.
    pub(crate) fn round_view(&self, key: Key, root: NodeId) -> Option<u32> {
        self.rounds.get(&(key, root)).map(|round| round.view)
    }

    /// The dissemination tree rooted at `root` over the view `0..view`.
    pub(crate) fn tree(&self, root: NodeId, view: u32) -> Tree {
        Tree::new(view, self.config.fanout(), root)
    }

    pub(crate) fn handle_ack(&mut self, from: NodeId, key: Key, root: NodeId, report: Report) {
        let Some(round) = self.rounds.get_mut(&(key, root)) else {
            return;
        };
        if !round.pending.remove(&from) {
            return;
        }
        let limits = self.limits();
        if let Some(round) = self.rounds.get_mut(&(key, root)) {
            round.report.merge(report, limits);
        }
        self.check_round(key, root);
    }

    pub(crate) fn handle_complete(&mut self, _from: NodeId, key: Key, view: u32, report: Report) {
        if self.waiters.contains_key(&key) {
            let mut bounded = Report::default();
            bounded.merge(report, self.limits());
            self.complete_globally(key, bounded.to_result(key), view);
        }
    }

    /// `key` finished locally: every round waiting for it may now acknowledge.
    pub(crate) fn local_done(&mut self, key: Key) {
        let roots: Vec<NodeId> = self
            .rounds
            .range((key, NodeId(0))..=(key, NodeId(u32::MAX)))
            .map(|((_, root), _)| *root)
            .collect();
        for root in roots {
            self.check_round(key, root);
        }
        self.send_ran(key);
    }

    pub(crate) fn disseminations_peer_down(&mut self, dead: NodeId) {
        // Rounds rooted at the dead node lead nowhere; its successor starts its own.
        self.rounds.retain(|(_, root), _| *root != dead);

        let adopting: Vec<(Key, NodeId)> = self
            .rounds
            .iter()
            .filter(|(_, round)| round.pending.contains(&dead))
            .map(|(id, _)| *id)
            .collect();
        for (key, root) in adopting {
            let mut view = 0;
            if let Some(round) = self.rounds.get_mut(&(key, root)) {
                round.pending.remove(&dead);
                round.report.unreachable.insert(dead);
                view = round.view;
            }
            let orphans = if dead.0 < view {
                self.tree(root, view).children(dead).collect()
            } else {
                Vec::new()
            };
            self.spread(key, root, orphans);
            self.check_round(key, root);
        }

        self.requesters.retain(|_, requesters| {
            requesters.remove(&dead);
            !requesters.is_empty()
        });

        let rerouted: Vec<Key> = self
            .waiters
            .iter()
            .filter(|(_, waiters)| waiters.coordinator == dead)
            .map(|(key, _)| *key)
            .collect();
        for key in rerouted {
            let coordinator = self.coordinator_for(key);
            if let Some(waiters) = self.waiters.get_mut(&key) {
                waiters.coordinator = coordinator;
                waiters.offer = None;
            }
            self.ask_coordinator(key, coordinator);
        }
    }

    /// The first live node at or after the key's home: its coordinator in this
    /// node's view. Views converge because every node learns of every crash.
    fn coordinator_for(&self, key: Key) -> NodeId {
        let nodes = self.size;
        let home = key.home(nodes).0;
        (0..nodes)
            .map(|i| NodeId((home + i) % nodes))
            .find(|node| !self.dead.contains(node))
            .unwrap_or(self.me())
    }

    fn ask_coordinator(&mut self, key: Key, coordinator: NodeId) {
        if coordinator == self.me() {
            self.coordinate(key, None);
            return;
        }
        let Some(registration) = self.entries.get(&key).map(|e| e.registration.clone()) else {
            return;
        };
        let offer = self.offer_to(coordinator);
        if let Some(waiters) = self.waiters.get_mut(&key) {
            waiters.offer = offer.map(|view| Offer { view, sent: false });
        }
        self.send(
            coordinator,
            Message::Request {
                key,
                registration,
                offer,
            },
        );
        self.send_ran(key);
    }

    /// The view to offer `coordinator` this node's own outcome under: when this
    /// node is a childless child of the coordinator in the tree over its view, its
    /// `Ran` can stand for its part in the round, which saves the coordinator a
    /// `Disseminate` and the round a hop. Not while joining (its runs wait for the
    /// replay).
    fn offer_to(&self, coordinator: NodeId) -> Option<u32> {
        let tree = self.tree(coordinator, self.size);
        (self.joining.is_none() && ran_stands_for_ack(&tree, self.size, self.me(), self.size))
            .then_some(self.size)
    }

    /// Reports this node's own outcome to the coordinator it offered it to, once
    /// done here, unless the coordinator's round reached this node first (its
    /// `Ack` then says the same).
    fn send_ran(&mut self, key: Key) {
        let Some(waiters) = self.waiters.get(&key) else {
            return;
        };
        let coordinator = waiters.coordinator;
        let Some(view) = waiters.offer.filter(|offer| !offer.sent).map(|o| o.view) else {
            return;
        };
        if self.rounds.contains_key(&(key, coordinator)) {
            return;
        }
        let Some(outcome) = self.entries.get(&key).and_then(|e| e.outcome()).cloned() else {
            return;
        };
        if let Some(offer) = self.waiters.get_mut(&key).and_then(|w| w.offer.as_mut()) {
            offer.sent = true;
        }
        // Cut as an `Ack` would carry it: a huge error text must not make the
        // message too large to send.
        let error = outcome
            .err()
            .map(|error| cut_text(&error, self.limits().text_bytes));
        self.send(coordinator, Message::Ran { key, view, error });
    }

    /// Starts the round rooted here, unless one is under way. The local entry
    /// exists. A requester that offered its own outcome (`requester`: who, over
    /// which view) is left out of the dissemination when its `Ran` stands for its
    /// part: the round waits for that instead.
    fn coordinate(&mut self, key: Key, requester: Option<(NodeId, u32)>) {
        let me = self.me();
        if self.rounds.contains_key(&(key, me)) {
            return;
        }
        self.rounds.insert(
            (key, me),
            Round {
                parent: None,
                pending: BTreeSet::new(),
                report: Report::default(),
                acknowledged: false,
                view: self.size,
            },
        );
        let tree = self.tree(me, self.size);
        let ran = requester
            .filter(|(node, view)| {
                !self.dead.contains(node) && ran_stands_for_ack(&tree, self.size, *node, *view)
            })
            .map(|(node, _)| node);
        let children = tree.children(me).filter(|c| Some(*c) != ran).collect();
        if let (Some(node), Some(round)) = (ran, self.rounds.get_mut(&(key, me))) {
            round.pending.insert(node);
        }
        self.spread(key, me, children);
        self.check_round(key, me);
    }

    /// Sends the registration to each of `targets`; a target already down is named
    /// unreachable and its children are reached instead.
    fn spread(&mut self, key: Key, root: NodeId, targets: Vec<NodeId>) {
        let Some(registration) = self.entries.get(&key).map(|e| e.registration.clone()) else {
            return;
        };
        let Some(view) = self.round_view(key, root) else {
            return;
        };
        let tree = self.tree(root, view);
        let mut live = Vec::with_capacity(targets.len());
        let mut unreachable = Vec::new();
        let mut stack = targets;
        stack.reverse();
        while let Some(target) = stack.pop() {
            if self.dead.contains(&target) {
                unreachable.push(target);
                if target.0 >= view {
                    continue; // a grafted joiner: no subtree
                }
                let mut orphans: Vec<NodeId> = tree.children(target).collect();
                orphans.reverse();
                stack.extend(orphans);
            } else {
                live.push(target);
            }
        }
        let Some(round) = self.rounds.get_mut(&(key, root)) else {
            return;
        };
        round.pending.extend(live.iter().copied());
        round.report.unreachable.extend(unreachable);
        for target in live {
            let registration = registration.clone();
            self.send(
                target,
                Message::Disseminate {
                    key,
                    root,
                    view,
                    registration,
                },
            );
        }
    }

    /// Acknowledges the round once the local invocation and every child are done.
    fn check_round(&mut self, key: Key, root: NodeId) {
        let Some(outcome) = self.entries.get(&key).and_then(|e| e.outcome()).cloned() else {
            return;
        };
        let (me, limits) = (self.me(), self.limits());
        let Some(round) = self.rounds.get_mut(&(key, root)) else {
            return;
        };
        if round.acknowledged || !round.pending.is_empty() {
            return;
        }
        round.acknowledged = true;
        if let Err(error) = outcome {
            round.report.add_failure(me, &error, limits);
        }
        let report = round.report.clone();
        let view = round.view;
        match round.parent {
            Some(parent) => self.send(parent, Message::Ack { key, root, report }),
            None => {
                for requester in self.requesters.remove(&key).unwrap_or_default() {
                    let report = report.clone();
                    self.send(requester, Message::Complete { key, view, report });
                }
                self.complete_globally(key, report.to_result(key), view);
            }
        }
    }

    fn complete_globally(&mut self, key: Key, result: RegistrationResult, view: u32) {
        if let Some(waiters) = self.waiters.remove(&key) {
            for request in waiters.requests {
                let result = result.clone();
                self.emit(Output::Completed { request, result });
            }
        }
        self.completed.insert(key, (result, view));
    }
}

/// A job-wide result as a report again, within `limits`: to answer a late request.
fn report_of(result: &RegistrationResult, limits: Limits) -> Report {
    let mut report = Report::default();
    for failure in &result.failures {
        report.add_failure(failure.node, &failure.error, limits);
    }
    report.unreachable = result.unreachable.iter().copied().collect();
    report
}
