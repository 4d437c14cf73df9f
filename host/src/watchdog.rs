//! Registrations and launches that wait long, and callbacks and tasks that run
//! long here: the event loop logs a warning naming each and what it waits for
//! (or that it is still running), then again each time the wait doubles, so a
//! job that seems stuck says where: a callback that never returns is named on
//! the node where it runs, not only as a silent coordinator on the requester's.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use herald_core::{InvocationId, Key, LaunchId, NodeId, Registration, RequestId, TaskRunId};

use crate::code::describe_registration;

/// Something this node asked for and has no answer to yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Waiting {
    /// A registration request, by key.
    Registration(RequestId, Key),
    /// A launch (its target and task are in its [`Label::Launch`]).
    Launch(LaunchId),
    /// A registration's callback running on this node.
    Invocation(InvocationId),
    /// A task launched by another node (or this one) running on this node.
    Task(TaskRunId),
}

/// What a watched wait is, as a person reads it.
pub(crate) enum Label {
    /// Already said.
    Text(String),
    /// A launch: the task's name and its target.
    Launch(String, NodeId),
    /// A registration (its code shared, not copied), described only if a
    /// warning is due: most invocations end long before, and describing
    /// decodes the code.
    Registration(Key, Registration),
}

impl Label {
    fn text(&self) -> String {
        match self {
            Label::Text(text) | Label::Launch(text, _) => text.clone(),
            Label::Registration(key, registration) => format!(
                "{} ({})",
                key.short(),
                describe_registration(&registration.code, registration.tag.as_deref())
            ),
        }
    }
}

/// The waits being watched.
pub(crate) struct Watchdog {
    /// First warning after this long; zero: never warn.
    after: Duration,
    items: HashMap<Waiting, Watched>,
    /// Per key, the nodes this node sent the registration down the tree to whose
    /// acknowledgement has not arrived: who a waiting round here waits for.
    acks_due: HashMap<Key, BTreeSet<NodeId>>,
    /// No warning is due before this (it may be earlier than the earliest
    /// watched one, which may have ended since): `next_due` is called at every
    /// step of the event loop, so it does not look at every item.
    next: Option<Instant>,
}

struct Watched {
    since: Instant,
    warn_at: Instant,
    /// What the wait is for, as a person reads it (the task's name, ...).
    label: Label,
}

impl Watchdog {
    pub(crate) fn new(after: Duration) -> Watchdog {
        Watchdog {
            after,
            items: HashMap::new(),
            acks_due: HashMap::new(),
            next: None,
        }
    }

    /// Starts watching `waiting`.
    pub(crate) fn start(&mut self, waiting: Waiting, label: Label, now: Instant) {
        if self.after.is_zero() {
            return;
        }
        let warn_at = now + self.after;
        self.items.insert(
            waiting,
            Watched {
                since: now,
                warn_at,
                label,
            },
        );
        self.next = Some(self.next.map_or(warn_at, |next| next.min(warn_at)));
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

    /// Stops watching a callback or task that ran here (it returned).
    pub(crate) fn finish_running(&mut self, running: Waiting) {
        self.items.remove(&running);
    }

    /// Stops watching a launch (it was answered or failed).
    pub(crate) fn finish_launch(&mut self, launch: LaunchId) {
        self.items.remove(&Waiting::Launch(launch));
    }

    /// When the next warning may be due, if any wait is watched.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// Logs a warning for each wait whose time has come; `waits_for` says what
    /// a registration is waiting for right now (given the nodes whose
    /// acknowledgements are due here).
    pub(crate) fn warn_due(
        &mut self,
        now: Instant,
        waits_for: impl Fn(&Waiting, &[NodeId]) -> String,
    ) {
        let mut next: Option<Instant> = None;
        for (waiting, watched) in &mut self.items {
            if watched.warn_at > now {
                next = Some(next.map_or(watched.warn_at, |n| n.min(watched.warn_at)));
                continue;
            }
            let waited = now.duration_since(watched.since);
            // Next time when the wait has doubled: a long stall logs a few lines, not one a second.
            watched.warn_at = now + waited.max(self.after);
            next = Some(next.map_or(watched.warn_at, |n| n.min(watched.warn_at)));
            let label = watched.label.text();
            let secs = waited.as_secs_f64();
            let line = match waiting {
                Waiting::Registration(_, key) => {
                    let due = self
                        .acks_due
                        .get(key)
                        .map(|due| due.iter().copied().collect::<Vec<_>>())
                        .unwrap_or_default();
                    format!(
                        "registration {} ({label}) has waited {secs:.1} s for {}",
                        key.short(),
                        waits_for(waiting, &due)
                    )
                }
                Waiting::Launch(_) => {
                    let to = match &watched.label {
                        Label::Launch(_, to) => to.to_string(),
                        _ => "its target".to_owned(),
                    };
                    format!(
                        "launch of task '{label}' to {to} has waited {secs:.1} s for the task's \
                         result from {to}"
                    )
                }
                Waiting::Invocation(_) => format!(
                    "the callback of registration {label} has been running on this node for \
                     {secs:.1} s; the registration waits for it to return here, and so does \
                     every node waiting for that registration"
                ),
                Waiting::Task(run) => format!(
                    "task '{label}' launched by {} has been running on this node for {secs:.1} \
                     s; its launcher waits for it to return",
                    run.origin
                ),
            };
            tracing::warn!(waited_s = secs, "herald: {line}");
        }
        self.next = next;
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
