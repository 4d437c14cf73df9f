//! The causality oracle, kept apart from the core's own bookkeeping: from what the
//! simulator itself does and sees (top-level requests its hosts make, `Request`s
//! and `Disseminate`s it delivers and the receiver accepts, nested requests its
//! hosts make from inside invocations, `PeerDown` outputs), it knows which global
//! registrations are done or running on each node. A task launched from A must not
//! run on B before every one of them running or done successfully on A (except the
//! launching invocation's chain) is done on B, nor at all if one failed on B.

use std::collections::{BTreeMap, BTreeSet};

use herald_core::{Key, LocalState, NodeId};

use crate::world::World;
use crate::{Protocol, Violation};

/// What the oracle knows of every node.
#[derive(Clone, Debug, Default, Hash)]
pub(crate) struct Views {
    nodes: Vec<View>,
}

#[derive(Clone, Debug, Default, Hash)]
struct View {
    /// Global keys done or running here: requested here at top level, or received
    /// in a `Request` or `Disseminate` that this node accepted.
    global: BTreeSet<Key>,
    /// Nodes this node has announced down (`Output::PeerDown`).
    dead: BTreeSet<NodeId>,
    /// (enclosing key, nested key) for every nested request made here: the
    /// enclosing registration may wait for the nested one.
    nested: BTreeSet<(Key, Key)>,
}

impl Views {
    pub(crate) fn new(nodes: u32) -> Self {
        Self {
            nodes: vec![View::default(); nodes as usize],
        }
    }

    /// The nodes `node` had announced down before a frame arrived.
    pub(crate) fn dead_before(&self, node: NodeId) -> BTreeSet<NodeId> {
        self.nodes[node.0 as usize].dead.clone()
    }

    pub(crate) fn top_level(&mut self, node: NodeId, key: Key) {
        self.nodes[node.0 as usize].global.insert(key);
    }

    pub(crate) fn nested(&mut self, node: NodeId, enclosing: Key, key: Key) {
        self.nodes[node.0 as usize].nested.insert((enclosing, key));
    }

    pub(crate) fn peer_down(&mut self, node: NodeId, down: NodeId) {
        self.nodes[node.0 as usize].dead.insert(down);
    }

    /// What a launch from `node` must wait for on its target: every global key
    /// here, except, for a launch from inside the invocation of `enclosing`, that
    /// key and every key that (through nesting made here) may wait for it.
    pub(crate) fn requirements(&self, node: NodeId, enclosing: Option<Key>) -> Vec<Key> {
        let view = &self.nodes[node.0 as usize];
        let mut excluded = BTreeSet::new();
        if let Some(key) = enclosing {
            let mut waiting_on: BTreeMap<Key, Vec<Key>> = BTreeMap::new();
            for (outer, inner) in &view.nested {
                waiting_on.entry(*inner).or_default().push(*outer);
            }
            let mut stack = vec![key];
            while let Some(key) = stack.pop() {
                if excluded.insert(key) {
                    stack.extend(waiting_on.get(&key).into_iter().flatten());
                }
            }
        }
        view.global.difference(&excluded).copied().collect()
    }
}

impl<P: Protocol> World<P> {
    /// `to` handled a frame from `from` carrying these requests and disseminations:
    /// each accepted one (the sender and root were not down for `to`, and `to` now
    /// has the key) makes its key global on `to`.
    pub(crate) fn learn_carried(
        &mut self,
        to: NodeId,
        from: NodeId,
        carried: &[(herald_core::Key, Option<NodeId>)],
        dead_before: &BTreeSet<NodeId>,
    ) {
        if dead_before.contains(&from) {
            return;
        }
        for (key, root) in carried {
            let root_down = root.is_some_and(|r| dead_before.contains(&r));
            if !root_down && self.nodes[to.0 as usize].local_state(key).is_some() {
                self.views.top_level(to, *key);
            }
        }
    }

    /// A task of the launch recorded with `requires` starts on `node`: each
    /// requirement must be done there, and done without failure.
    pub(crate) fn check_causality(&mut self, node: NodeId, task: &str, requires: &[Key]) {
        for &key in requires {
            match self.nodes[node.0 as usize].local_state(&key) {
                Some(LocalState::Done(Ok(()))) => {}
                Some(LocalState::Done(Err(error))) => self.violate(Violation::TaskDespiteFailure {
                    node,
                    task: task.to_string(),
                    key,
                    error,
                }),
                _ => self.violate(Violation::TaskBeforeRequirement {
                    node,
                    task: task.to_string(),
                    key,
                }),
            }
        }
    }
}
