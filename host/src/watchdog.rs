//! Registrations and launches that wait long: the event loop logs a warning naming
//! each and what it waits for, then again each time the wait doubles, so a job that
//! seems stuck says where.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use herald_core::{Key, LaunchId, NodeId, RequestId};

/// Something this node asked for and has no answer to yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Waiting {
    /// A registration request, by key.
    Registration(RequestId, Key),
    /// A launch, by target and task.
    Launch(LaunchId, NodeId),
}

/// The waits being watched.
pub(crate) struct Watchdog {
    /// First warning after this long; zero: never warn.
    after: Duration,
    items: HashMap<Waiting, Watched>,
    /// Per key, the nodes this node sent the registration down the tree to whose
    /// acknowledgement has not arrived: who a waiting round here waits for.
    acks_due: HashMap<Key, BTreeSet<NodeId>>,
}

struct Watched {
    since: Instant,
    warn_at: Instant,
    /// What the wait is for, as a person reads it (the task's name, ...).
    label: String,
}

impl Watchdog {
    pub(crate) fn new(after: Duration) -> Watchdog {
        Watchdog {
            after,
            items: HashMap::new(),
            acks_due: HashMap::new(),
        }
    }

    /// Starts watching `waiting`.
    pub(crate) fn start(&mut self, waiting: Waiting, label: String, now: Instant) {
        if self.after.is_zero() {
            return;
        }
        self.items.insert(
            waiting,
            Watched {
                since: now,
                warn_at: now + self.after,
                label,
            },
        );
    }

    /// Stops watching `waiting` (it was answered).
    pub(crate) fn finish(&mut self, waiting: Waiting) {
        if let Waiting::Registration(_, key) = waiting {
            self.acks_due.remove(&key);
        }
        self.items.remove(&waiting);
    }

    /// This node sent `key` down the tree to `to`.
    pub(crate) fn disseminated(&mut self, key: Key, to: NodeId) {
        if !self.after.is_zero() {
            self.acks_due.entry(key).or_default().insert(to);
        }
    }

    /// `from` acknowledged `key` (for its whole subtree).
    pub(crate) fn acknowledged(&mut self, key: &Key, from: NodeId) {
        if let Some(due) = self.acks_due.get_mut(key) {
            due.remove(&from);
            if due.is_empty() {
                self.acks_due.remove(key);
            }
        }
    }

    /// `node` is down: nothing is due from it any more (its subtree is adopted,
    /// and shows up as new disseminations).
    pub(crate) fn node_down(&mut self, node: NodeId) {
        self.acks_due.retain(|_, due| {
            due.remove(&node);
            !due.is_empty()
        });
    }

    /// Stops watching a launch (it was answered or failed).
    pub(crate) fn finish_launch(&mut self, launch: LaunchId) {
        self.items
            .retain(|waiting, _| !matches!(waiting, Waiting::Launch(l, _) if *l == launch));
    }

    /// When the next warning is due, if any wait is watched.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.items.values().map(|w| w.warn_at).min()
    }

    /// Logs a warning for each wait whose time has come; `waits_for` says what
    /// each is waiting for right now.
    pub(crate) fn warn_due(
        &mut self,
        now: Instant,
        waits_for: impl Fn(&Waiting, &[NodeId]) -> String,
    ) {
        for (waiting, watched) in &mut self.items {
            if watched.warn_at > now {
                continue;
            }
            let waited = now.duration_since(watched.since);
            // Next time when the wait has doubled: a long stall logs a few lines, not one a second.
            watched.warn_at = now + waited.max(self.after);
            let what = match waiting {
                Waiting::Registration(_, key) => {
                    format!("registration {} ({})", key.short(), watched.label)
                }
                Waiting::Launch(_, to) => format!("launch of task '{}' to {to}", watched.label),
            };
            tracing::warn!(
                waited_s = waited.as_secs_f64(),
                "herald: {what} has waited {:.1} s for {}",
                waited.as_secs_f64(),
                waits_for(
                    waiting,
                    &match waiting {
                        Waiting::Registration(_, key) => self
                            .acks_due
                            .get(key)
                            .map(|due| due.iter().copied().collect())
                            .unwrap_or_default(),
                        Waiting::Launch(..) => Vec::new(),
                    }
                )
            );
        }
    }
}

/// The node that coordinates `key` now: its home, or the next node not known down.
pub(crate) fn coordinator_of(
    key: &Key,
    nodes: u32,
    dead: &std::collections::BTreeSet<NodeId>,
) -> NodeId {
    let home = key.home(nodes).0;
    (0..nodes)
        .map(|i| NodeId((home + i) % nodes))
        .find(|node| !dead.contains(node))
        .unwrap_or(NodeId(home))
}
