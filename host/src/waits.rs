//! The wait-for graph of one node, so that no wait on a registration blocks for
//! ever: a wait that would close a cycle is refused, and a nested registration
//! that closes one wakes a waiter on it with a refusal.
//!
//! Vertices are registration keys running on this node. An edge `A -> B` says
//! that `A` cannot finish here before `B` has finished here, for one of two
//! reasons:
//!
//! * **nested**: `B` was registered inside `A`'s invocation and the core made
//!   `A`'s entry wait for it. This mirrors the core's rule exactly (no edge when
//!   `B` is `A`, or already waits on `A` through nested edges), so the core's own
//!   nested edges never form a cycle. Edges are added when the registration is
//!   sent to the core, in the order the core receives them (the caller holds the
//!   graph while it sends), and removed when the registration's handle completes,
//!   which for a nested registration is when `B` is done here.
//! * **wait**: the thread running `A`'s invocation blocks on a handle of `B`. A
//!   nested handle completes when `B` is done here; a top-level one only when `B`
//!   is done on every node, this one included, so the same edge holds.
//!
//! The mirror may keep a nested edge a little after the core dropped it, but only
//! into an entry that is already done, which has no edges out: such an edge never
//! lies on a path to a running entry, and every check below asks for a path to
//! one (the waiter's own invocation, or the parent of a new registration).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use herald_core::Key;

use crate::sync::{Mutex, lock};

/// The graph, shared by every thread of one runtime.
#[derive(Debug, Default)]
pub(crate) struct WaitGraph {
    state: Mutex<GraphState>,
}

/// A wait in progress, refused later if a nested registration closes a cycle
/// through it.
#[derive(Debug)]
pub(crate) struct WaitTicket {
    id: u64,
    refusal: Arc<Mutex<Option<String>>>,
}

#[derive(Debug, Default)]
struct GraphState {
    /// Nested edges by the handle of the registration that made them.
    nested: BTreeMap<u64, (Key, Key)>,
    /// The same edges by parent: child -> number of handles that made it.
    nested_out: BTreeMap<Key, BTreeMap<Key, u32>>,
    /// Waits in progress by ticket id.
    waits: BTreeMap<u64, Wait>,
    /// The same waits by the key whose invocation waits.
    waits_out: BTreeMap<Key, BTreeSet<u64>>,
    next_wait: u64,
}

#[derive(Debug)]
struct Wait {
    from: Key,
    to: Key,
    refusal: Arc<Mutex<Option<String>>>,
}

/// How one edge came to be, to explain a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EdgeKind {
    Nested,
    /// The wait with this ticket id.
    Wait(u64),
}

impl WaitGraph {
    /// Records that `key` is registered inside the invocation of `parent`, under
    /// handle `handle`, and runs `send` (which hands the registration to the
    /// core and says whether it could) before any other thread changes the
    /// graph, so the core sees nested registrations in the order the graph does.
    /// Returns how many waits were refused because this closed a cycle through
    /// them (wake their waiters).
    pub(crate) fn nested_and(
        &self,
        handle: u64,
        parent: Key,
        key: Key,
        send: impl FnOnce() -> bool,
    ) -> usize {
        let mut state = lock(&self.state);
        if !send() || key == parent || state.path(key, parent, false).is_some() {
            // The core adds no edge either: `key` encloses `parent`.
            return 0;
        }
        state.add_nested(handle, parent, key);
        let mut refused = 0;
        // Nested edges alone never close a cycle, so each cycle holds a wait.
        while let Some(path) = state.path(key, parent, true) {
            let Some(id) = path.iter().find_map(|(_, _, kind)| match kind {
                EdgeKind::Wait(id) => Some(*id),
                EdgeKind::Nested => None,
            }) else {
                debug_assert!(false, "a cycle of nested edges only");
                break;
            };
            let mut cycle = vec![(parent, key, EdgeKind::Nested)];
            cycle.extend(path);
            let reason = format!(
                "registration {} was then nested in {} on another thread, which closes a \
                 cycle: {}; return instead of waiting",
                key.short(),
                parent.short(),
                describe(&cycle)
            );
            if let Some(wait) = state.remove_wait(id) {
                *lock(&wait.refusal) = Some(reason);
                refused += 1;
            }
        }
        refused
    }

    /// The registration with handle `handle` completed: its nested edge, if it
    /// made one, is gone (the entry it pointed to is done here).
    pub(crate) fn completed(&self, handle: u64) {
        lock(&self.state).remove_nested(handle);
    }

    /// The thread running the invocation of `from` is about to wait for `to`.
    /// Refused, with the reason, if `to` cannot finish before `from` returns.
    pub(crate) fn begin_wait(&self, from: Key, to: Key) -> Result<WaitTicket, String> {
        let mut state = lock(&self.state);
        if to == from {
            return Err(format!(
                "registration {} cannot finish before the invocation running on this thread \
                 returns, because that invocation is part of it; return instead of waiting",
                to.short()
            ));
        }
        if let Some(path) = state.path(to, from, true) {
            return Err(format!(
                "registration {} cannot finish before the invocation running on this thread \
                 ({}) returns: {}; return instead of waiting",
                to.short(),
                from.short(),
                describe(&path)
            ));
        }
        let id = state.next_wait;
        state.next_wait += 1;
        let refusal = Arc::new(Mutex::new(None));
        let wait = Wait {
            from,
            to,
            refusal: Arc::clone(&refusal),
        };
        state.waits.insert(id, wait);
        state.waits_out.entry(from).or_default().insert(id);
        Ok(WaitTicket { id, refusal })
    }

    /// The wait ended (or was refused): its edge is gone.
    pub(crate) fn end_wait(&self, ticket: &WaitTicket) {
        lock(&self.state).remove_wait(ticket.id);
    }

    /// Number of waits in progress.
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.state).waits.len()
    }
}

impl WaitTicket {
    /// Why the wait was refused after it began, if it was.
    pub(crate) fn refusal(&self) -> Option<String> {
        lock(&self.refusal).clone()
    }
}

impl GraphState {
    /// A path of edges from `from` to `to`, with waits only if `with_waits`.
    fn path(&self, from: Key, to: Key, with_waits: bool) -> Option<Vec<(Key, Key, EdgeKind)>> {
        // Depth-first, remembering how each key was reached.
        let mut reached: BTreeMap<Key, (Key, EdgeKind)> = BTreeMap::new();
        let mut seen = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(key) = stack.pop() {
            if key == to {
                let mut path = Vec::new();
                let mut at = to;
                while at != from {
                    let (previous, kind) = reached[&at];
                    path.push((previous, at, kind));
                    at = previous;
                }
                path.reverse();
                return Some(path);
            }
            for (next, kind) in self.edges_from(key, with_waits) {
                if seen.insert(next) {
                    reached.insert(next, (key, kind));
                    stack.push(next);
                }
            }
        }
        None
    }

    fn edges_from(&self, key: Key, with_waits: bool) -> Vec<(Key, EdgeKind)> {
        let nested = self
            .nested_out
            .get(&key)
            .into_iter()
            .flat_map(|children| children.keys())
            .map(|child| (*child, EdgeKind::Nested));
        let waits = self
            .waits_out
            .get(&key)
            .filter(|_| with_waits)
            .into_iter()
            .flatten()
            .filter_map(|id| Some((self.waits.get(id)?.to, EdgeKind::Wait(*id))));
        nested.chain(waits).collect()
    }

    fn add_nested(&mut self, handle: u64, parent: Key, key: Key) {
        self.nested.insert(handle, (parent, key));
        *self
            .nested_out
            .entry(parent)
            .or_default()
            .entry(key)
            .or_default() += 1;
    }

    fn remove_nested(&mut self, handle: u64) {
        let Some((parent, key)) = self.nested.remove(&handle) else {
            return;
        };
        if let Some(children) = self.nested_out.get_mut(&parent) {
            if let Some(count) = children.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    children.remove(&key);
                }
            }
            if children.is_empty() {
                self.nested_out.remove(&parent);
            }
        }
    }

    fn remove_wait(&mut self, id: u64) -> Option<Wait> {
        let wait = self.waits.remove(&id)?;
        if let Some(ids) = self.waits_out.get_mut(&wait.from) {
            ids.remove(&id);
            if ids.is_empty() {
                self.waits_out.remove(&wait.from);
            }
        }
        Some(wait)
    }
}

/// "A waits for B (nested in it), B's invocation waits for C, ..."
fn describe(path: &[(Key, Key, EdgeKind)]) -> String {
    let mut text = String::new();
    for (index, (from, to, kind)) in path.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let _ = match kind {
            EdgeKind::Nested => write!(
                text,
                "{} waits for {} (nested in it)",
                from.short(),
                to.short()
            ),
            EdgeKind::Wait(_) => write!(
                text,
                "the invocation of {} waits for {}",
                from.short(),
                to.short()
            ),
        };
    }
    text
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    fn nested(graph: &WaitGraph, handle: u64, parent: Key, key: Key) -> usize {
        graph.nested_and(handle, parent, key, || true)
    }

    #[test]
    fn two_invocations_nesting_each_other_refuse_the_second_wait() {
        let graph = WaitGraph::default();
        // A nests B (an edge), then B nests A: A already waits for B, so the
        // core adds no edge B -> A, and neither does the mirror.
        assert_eq!(nested(&graph, 1, key(1), key(2)), 0);
        assert_eq!(nested(&graph, 2, key(2), key(1)), 0);
        let a_waits = graph.begin_wait(key(1), key(2)).expect("A may wait for B");
        let refused = graph
            .begin_wait(key(2), key(1))
            .expect_err("B waiting for A");
        assert!(refused.contains("waits for"), "{refused}");
        graph.end_wait(&a_waits);
        assert_eq!(graph.waiting(), 0);
    }

    #[test]
    fn a_nested_registration_closing_a_cycle_refuses_the_wait_on_it() {
        let graph = WaitGraph::default();
        // A's invocation waits for a top-level B; then B's invocation nests A.
        let a_waits = graph.begin_wait(key(1), key(2)).expect("no cycle yet");
        assert_eq!(nested(&graph, 7, key(2), key(1)), 1, "one wait refused");
        let reason = a_waits.refusal().expect("refused");
        assert!(reason.contains("closes a cycle"), "{reason}");
        assert_eq!(graph.waiting(), 0);
        // Waiting again is refused at once.
        assert!(graph.begin_wait(key(1), key(2)).is_err());
        // Once A is done here (its nested handle completed) B may wait for anything.
        graph.completed(7);
        assert!(graph.begin_wait(key(1), key(2)).is_ok());
    }

    #[test]
    fn cycles_through_several_threads_are_found_and_unrelated_waits_allowed() {
        let graph = WaitGraph::default();
        // A -> B nested, B's invocation waits for C, C nests D.
        nested(&graph, 1, key(1), key(2));
        let _b = graph.begin_wait(key(2), key(3)).expect("B waits for C");
        nested(&graph, 2, key(3), key(4));
        // D waiting for A closes A -> B -> C -> D -> A.
        let refused = graph.begin_wait(key(4), key(1)).expect_err("cycle");
        assert!(
            refused.contains("the invocation of"),
            "names the wait: {refused}"
        );
        // E waiting for A does not.
        assert!(graph.begin_wait(key(5), key(1)).is_ok());
        // An edge made by two handles lasts until both completed.
        nested(&graph, 10, key(7), key(8));
        nested(&graph, 11, key(7), key(8));
        graph.completed(10);
        assert!(graph.begin_wait(key(8), key(7)).is_err(), "8 waiting for 7");
        graph.completed(11);
        assert!(graph.begin_wait(key(8), key(7)).is_ok());
        // Self-nesting adds nothing; waiting on oneself is refused.
        assert_eq!(nested(&graph, 3, key(6), key(6)), 0);
        assert!(graph.begin_wait(key(6), key(6)).is_err());
    }
}
