//! The at-most-once table: each key's local invocation, the registrations nested in
//! it, and what waits for it to finish.

use std::collections::{BTreeSet, VecDeque};

use crate::node::{Invocation, LocalState, Output};
use crate::{
    InvocationId, Key, Node, NodeFailure, Registration, RegistrationResult, RequestId, Scope,
};

/// One key's local state: invoked once, finished when its own invocation and every
/// registration nested in it have finished.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) registration: Registration,
    /// The invocation's own outcome, once its host reported it.
    own: Option<Result<(), String>>,
    /// Nested registrations this entry still waits for.
    nested_pending: BTreeSet<Key>,
    /// The first nested registration that failed, as error text.
    nested_failure: Option<String>,
    /// The final outcome: own failure first, then nested failure.
    done: Option<Result<(), String>>,
    /// Entries that nested this one and wait for it.
    pub(crate) dependents: BTreeSet<Key>,
    /// Whether the key is global here (not only nested): launches require it.
    global: bool,
    /// Nested requests answered when this entry finishes.
    requests: Vec<RequestId>,
    /// Whether its invocation has been handed to the host (a joiner defers those
    /// of keys it receives until it has replayed the log).
    started: bool,
}

impl Entry {
    pub(crate) fn state(&self) -> LocalState {
        match &self.done {
            Some(outcome) => LocalState::Done(outcome.clone()),
            None => LocalState::Running,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.is_some()
    }

    pub(crate) fn outcome(&self) -> Option<&Result<(), String>> {
        self.done.as_ref()
    }
}

impl Node {
    /// Starts the local invocation of `key` unless it already has one (or, on a
    /// joiner still replaying the log, queues it after the log).
    pub(crate) fn ensure_invoked(
        &mut self,
        key: Key,
        registration: &Registration,
        parent: Option<InvocationId>,
    ) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                registration: registration.clone(),
                own: None,
                nested_pending: BTreeSet::new(),
                nested_failure: None,
                done: None,
                dependents: BTreeSet::new(),
                global: false,
                requests: Vec::new(),
                started: false,
            },
        );
        if parent.is_none() && self.defers_invocations() {
            self.defer(key);
        } else {
            self.start_invocation(key, parent);
        }
    }

    /// Hands `key`'s invocation to the host, once.
    pub(crate) fn start_invocation(&mut self, key: Key, parent: Option<InvocationId>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if entry.started {
            return;
        }
        entry.started = true;
        let registration = entry.registration.clone();
        let id = self.next_invocation_id();
        self.invocations.insert(id, key);
        self.emit(Output::Invoke(Invocation {
            id,
            key,
            registration,
            parent,
        }));
    }

    /// Starts the local invocation of `key` unless it already has one, and records
    /// the key as global here: requested at top level or received from another node.
    pub(crate) fn ensure_invoked_global(&mut self, key: Key, registration: &Registration) {
        self.ensure_invoked(key, registration, None);
        if let Some(entry) = self.entries.get_mut(&key) {
            if !entry.global {
                entry.global = true;
                self.global_keys.push(key);
            }
        }
    }

    /// A registration requested while `parent` (running `parent_key`) executes.
    pub(crate) fn register_nested(
        &mut self,
        key: Key,
        registration: Registration,
        parent: InvocationId,
        parent_key: Key,
        request: RequestId,
    ) {
        self.ensure_invoked(key, &registration, Some(parent));
        // A key a joiner deferred runs now: its enclosing invocation waits for it.
        if self.entries.get(&key).is_some_and(|e| !e.started) {
            self.undefer(key);
            self.start_invocation(key, Some(parent));
        }
        let child_outcome = self.entries.get(&key).and_then(|e| e.outcome().cloned());
        match child_outcome {
            Some(outcome) => {
                if let Err(error) = &outcome {
                    self.note_nested_failure(parent_key, key, error);
                }
                let result = self.local_result(key, &outcome);
                self.emit(Output::Completed { request, result });
            }
            None => {
                // The enclosing registration itself, or one already waiting on it,
                // is recognised as enclosing: waiting for it would be a cycle.
                if key != parent_key && !self.waits_on(key, parent_key) {
                    if let Some(parent_entry) = self.entries.get_mut(&parent_key) {
                        parent_entry.nested_pending.insert(key);
                    }
                    if let Some(child) = self.entries.get_mut(&key) {
                        child.dependents.insert(parent_key);
                    }
                }
                if let Some(child) = self.entries.get_mut(&key) {
                    child.requests.push(request);
                }
            }
        }
    }

    /// The host reported the outcome of `key`'s own invocation.
    pub(crate) fn finish_own_invocation(&mut self, key: Key, outcome: Result<(), String>) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.own = Some(outcome);
        }
        self.finish_ready(key);
    }

    /// Whether `from` waits, directly or through nested registrations, on `target`.
    fn waits_on(&self, from: Key, target: Key) -> bool {
        let mut stack = vec![from];
        let mut seen = BTreeSet::new();
        while let Some(key) = stack.pop() {
            if key == target {
                return true;
            }
            if seen.insert(key) {
                if let Some(entry) = self.entries.get(&key) {
                    stack.extend(entry.nested_pending.iter().copied());
                }
            }
        }
        false
    }

    fn note_nested_failure(&mut self, parent_key: Key, child: Key, error: &str) {
        if let Some(parent) = self.entries.get_mut(&parent_key) {
            parent.nested_failure.get_or_insert_with(|| {
                format!("nested registration {} failed: {error}", child.short())
            });
        }
    }

    /// Finishes `key` if it is ready, then everything that was waiting only for it.
    fn finish_ready(&mut self, key: Key) {
        let mut ready = VecDeque::from([key]);
        while let Some(key) = ready.pop_front() {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let Some(own) = &entry.own else { continue };
            if entry.done.is_some() || !entry.nested_pending.is_empty() {
                continue;
            }
            let outcome = match (own, &entry.nested_failure) {
                (Err(error), _) => Err(error.clone()),
                (Ok(()), Some(nested)) => Err(nested.clone()),
                (Ok(()), None) => Ok(()),
            };
            entry.done = Some(outcome.clone());
            let dependents = std::mem::take(&mut entry.dependents);
            let requests = std::mem::take(&mut entry.requests);
            self.log.push(key);

            let result = self.local_result(key, &outcome);
            for request in requests {
                self.emit(Output::Completed {
                    request,
                    result: result.clone(),
                });
            }
            for parent in dependents {
                if let Err(error) = &outcome {
                    self.note_nested_failure(parent, key, error);
                }
                if let Some(parent_entry) = self.entries.get_mut(&parent) {
                    parent_entry.nested_pending.remove(&key);
                }
                ready.push_back(parent);
            }
            self.local_done(key);
            self.release_tasks(key);
        }
        if self.joining.is_some() {
            self.advance_replay();
        }
    }

    fn local_result(&self, key: Key, outcome: &Result<(), String>) -> RegistrationResult {
        RegistrationResult {
            key,
            scope: Scope::Local,
            failures: match outcome {
                Ok(()) => Vec::new(),
                Err(error) => vec![NodeFailure {
                    node: self.me(),
                    error: error.clone(),
                }],
            },
            unreachable: Vec::new(),
        }
    }
}
