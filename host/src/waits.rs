//! The wait-for graph of one node, so that no wait of an invocation (for a
//! registration, or for a task launched to this node) blocks for ever in a cycle:
//! a wait that would close a cycle is refused, and a nested registration that
//! closes one wakes a waiter on it with a refusal.
//!
//! Vertices are registration keys running on this node. An edge `A -> B` says
//! that `A` cannot finish here before `B` has finished here, for one of three
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
//! * **task wait**: the thread running `A`'s invocation blocks on a task launched
//!   to this node, which the core holds until every registration it requires is
//!   done here: an edge to each of them. The core requires every key that was
//!   global here when the task was launched, except the launching invocation's
//!   key and those enclosing it; the graph knows the keys invoked here as global
//!   registrations (in order, so a launch records only a count) and computes the
//!   same exception at launch. A key that became global after being invoked
//!   nested is not known, so a cycle through it is missed, never invented.
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
    /// Keys invoked here as global registrations, with their order.
    global: BTreeMap<Key, usize>,
    /// What each task launched to this node needs, by task handle.
    tasks: BTreeMap<u64, TaskNeeds>,
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
    to: Target,
    refusal: Arc<Mutex<Option<String>>>,
}

/// What a wait is for.
#[derive(Clone, Debug)]
enum Target {
    /// A registration, done here.
    Key(Key),
    /// A task launched to this node, held until what it needs is done here.
    Task(TaskNeeds),
}

/// The registrations a task launched to this node needs done here first.
#[derive(Clone, Debug)]
struct TaskNeeds {
    /// Global keys invoked here before the launch (those of lower order).
    global_before: usize,
    /// Except these: the launching invocation's key and the keys enclosing it.
    except: BTreeSet<Key>,
}

/// How one edge came to be, to explain a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EdgeKind {
    Nested,
    /// The wait with this ticket id, for a registration.
    Wait(u64),
    /// The wait with this ticket id, for a task that needs the registration.
    TaskWait(u64),
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
                EdgeKind::Wait(id) | EdgeKind::TaskWait(id) => Some(*id),
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
        Ok(state.add_wait(from, Target::Key(to)))
    }

    /// `key` was invoked here as a global registration (top-level or received):
    /// tasks launched to this node from now on need it.
    pub(crate) fn global_invoked(&self, key: Key) {
        let mut state = lock(&self.state);
        let order = state.global.len();
        state.global.entry(key).or_insert(order);
    }

    /// A task with handle `handle` is launched to this node from the invocation
    /// of `launcher` (if any); `send` hands it to the core (and says whether it
    /// could) while the graph is held, so both see the same nested edges.
    pub(crate) fn launched_here(
        &self,
        handle: u64,
        launcher: Option<Key>,
        send: impl FnOnce() -> bool,
    ) {
        let mut state = lock(&self.state);
        if !send() {
            return;
        }
        let except = launcher.map(|key| state.enclosing(key)).unwrap_or_default();
        let needs = TaskNeeds {
            global_before: state.global.len(),
            except,
        };
        state.tasks.insert(handle, needs);
    }

    /// The task handle is released: nobody can wait for it any more.
    pub(crate) fn task_released(&self, handle: u64) {
        lock(&self.state).tasks.remove(&handle);
    }

    /// The thread running the invocation of `from` is about to wait for the task
    /// with handle `handle`. `Ok(None)` when the task was not launched to this
    /// node (nothing here holds it); refused, with the reason, if what it needs
    /// cannot be done before `from` returns. `joining`: this node is replaying
    /// the job's log, which holds every task here until it ends and waits for
    /// every invocation running here (each is part of the replay), so a task
    /// launched here cannot run before `from` returns.
    pub(crate) fn begin_task_wait(
        &self,
        from: Key,
        handle: u64,
        joining: bool,
    ) -> Result<Option<WaitTicket>, String> {
        let mut state = lock(&self.state);
        let Some(needs) = state.tasks.get(&handle).cloned() else {
            return Ok(None);
        };
        if joining {
            return Err(format!(
                "the task was launched to this node, which is still joining the job: it runs \
                 no task before it has replayed the job's registrations, and that replay \
                 waits for the invocation running on this thread ({}); return instead of \
                 waiting",
                from.short()
            ));
        }
        if state.task_needs(&needs, from) {
            return Err(format!(
                "the task was launched to this node while the invocation running on this \
                 thread ({}) was a global registration here, and runs only once that is \
                 done; return instead of waiting",
                from.short()
            ));
        }
        for key in state.with_edges_out() {
            if !state.task_needs(&needs, key) {
                continue;
            }
            if let Some(path) = state.path(key, from, true) {
                return Err(format!(
                    "the task was launched to this node and runs only once {} is done here, \
                     which cannot happen before the invocation running on this thread ({}) \
                     returns: {}; return instead of waiting",
                    key.short(),
                    from.short(),
                    describe(&path)
                ));
            }
        }
        Ok(Some(state.add_wait(from, Target::Task(needs))))
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
            for (next, kind) in self.edges_from(key, with_waits, to) {
                if seen.insert(next) {
                    reached.insert(next, (key, kind));
                    stack.push(next);
                }
            }
        }
        None
    }

    /// The edges out of `key`. A task wait has an edge to every key the task
    /// needs; only those that lead anywhere (edges out) or are `goal` matter.
    fn edges_from(&self, key: Key, with_waits: bool, goal: Key) -> Vec<(Key, EdgeKind)> {
        let mut edges: Vec<(Key, EdgeKind)> = self
            .nested_out
            .get(&key)
            .into_iter()
            .flat_map(|children| children.keys())
            .map(|child| (*child, EdgeKind::Nested))
            .collect();
        if !with_waits {
            return edges;
        }
        for id in self.waits_out.get(&key).into_iter().flatten() {
            match self.waits.get(id).map(|wait| &wait.to) {
                Some(Target::Key(to)) => edges.push((*to, EdgeKind::Wait(*id))),
                Some(Target::Task(needs)) => edges.extend(
                    self.with_edges_out()
                        .chain(std::iter::once(goal))
                        .filter(|next| self.task_needs(needs, *next))
                        .map(|next| (next, EdgeKind::TaskWait(*id))),
                ),
                None => {}
            }
        }
        edges
    }

    /// Keys with at least one edge out.
    fn with_edges_out(&self) -> impl Iterator<Item = Key> + '_ {
        let nested = self.nested_out.keys().copied();
        let waiting = self
            .waits_out
            .keys()
            .copied()
            .filter(|key| !self.nested_out.contains_key(key));
        nested.chain(waiting)
    }

    /// Whether a task with `needs` waits for `key` to be done here.
    fn task_needs(&self, needs: &TaskNeeds, key: Key) -> bool {
        self.global
            .get(&key)
            .is_some_and(|order| *order < needs.global_before)
            && !needs.except.contains(&key)
    }

    /// `key` and every key that reaches it through nested edges (encloses it).
    fn enclosing(&self, key: Key) -> BTreeSet<Key> {
        let mut found = BTreeSet::from([key]);
        let mut stack = vec![key];
        while let Some(child) = stack.pop() {
            for (parent, children) in &self.nested_out {
                if children.contains_key(&child) && found.insert(*parent) {
                    stack.push(*parent);
                }
            }
        }
        found
    }

    fn add_wait(&mut self, from: Key, to: Target) -> WaitTicket {
        let id = self.next_wait;
        self.next_wait += 1;
        let refusal = Arc::new(Mutex::new(None));
        let wait = Wait {
            from,
            to,
            refusal: Arc::clone(&refusal),
        };
        self.waits.insert(id, wait);
        self.waits_out.entry(from).or_default().insert(id);
        WaitTicket { id, refusal }
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
            EdgeKind::TaskWait(_) => write!(
                text,
                "the invocation of {} waits for a task held until {} is done here",
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
    fn tasks_launched_here_wait_for_what_was_global_at_their_launch() {
        let graph = WaitGraph::default();
        graph.global_invoked(key(1));
        graph.global_invoked(key(2));
        // A and B run; each launches a task here, which needs the other.
        graph.launched_here(10, Some(key(1)), || true);
        graph.launched_here(11, Some(key(2)), || true);
        let a_waits = graph
            .begin_task_wait(key(1), 10, false)
            .expect("A may wait");
        assert!(a_waits.is_some(), "a task launched here is in the graph");
        let refused = graph
            .begin_task_wait(key(2), 11, false)
            .expect_err("B closes the cycle");
        assert!(refused.contains("a task held until"), "{refused}");
        graph.end_wait(&a_waits.expect("ticket"));
        // A task launched elsewhere is not held here.
        assert!(matches!(graph.begin_task_wait(key(2), 99, false), Ok(None)));
        // A task launched by another thread while C was global needs C: C
        // waiting for it is refused at once.
        graph.global_invoked(key(3));
        graph.launched_here(12, None, || true);
        assert!(graph.begin_task_wait(key(3), 12, false).is_err());
        // One launched before D was global does not need D.
        graph.launched_here(13, None, || true);
        graph.global_invoked(key(4));
        assert!(
            graph
                .begin_task_wait(key(4), 13, false)
                .expect("allowed")
                .is_some()
        );
        graph.task_released(12);
        assert!(matches!(graph.begin_task_wait(key(3), 12, false), Ok(None)));
    }

    #[test]
    fn a_joining_node_refuses_a_wait_for_a_task_launched_here() {
        let graph = WaitGraph::default();
        graph.global_invoked(key(1));
        graph.launched_here(10, Some(key(1)), || true);
        let refused = graph
            .begin_task_wait(key(1), 10, true)
            .expect_err("the replay holds the task until the invocation returns");
        assert!(refused.contains("still joining the job"), "{refused}");
        // A task launched elsewhere is not held here, joining or not.
        assert!(matches!(graph.begin_task_wait(key(1), 99, true), Ok(None)));
        // Once admitted, the same wait is allowed.
        assert!(
            graph
                .begin_task_wait(key(1), 10, false)
                .expect("allowed")
                .is_some()
        );
    }

    #[test]
    fn a_nested_registration_closing_a_cycle_through_a_task_wait_refuses_it() {
        let graph = WaitGraph::default();
        graph.global_invoked(key(1));
        graph.global_invoked(key(2));
        // A waits for a task launched here from A, which needs B; then B nests A.
        graph.launched_here(10, Some(key(1)), || true);
        let a_waits = graph
            .begin_task_wait(key(1), 10, false)
            .expect("allowed")
            .expect("held here");
        assert_eq!(nested(&graph, 5, key(2), key(1)), 1);
        let reason = a_waits.refusal().expect("refused");
        assert!(reason.contains("a task held until"), "{reason}");
        // The launcher's own key and those enclosing it are not needed: a task
        // launched from C, nested in E, waits for neither.
        graph.global_invoked(key(5));
        nested(&graph, 6, key(5), key(3));
        graph.launched_here(11, Some(key(3)), || true);
        assert!(
            graph
                .begin_task_wait(key(3), 11, false)
                .expect("allowed")
                .is_some()
        );
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
