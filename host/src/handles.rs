//! (Items are `pub` only so that `loom_api` can re-export them for the loom tests;
//! the module itself is private.)
//!
//! The handle table: results that API callers wait for, filled in by the event loop.
//!
//! A handle is created pending by the thread that issues a command, before the
//! command is sent, so the event loop always finds it. Several holders may share
//! one handle (all task variants of one batch do): each holds a reference, and
//! the last release frees it. A handle released by every holder before it
//! completes is *detached*: its result goes back to the completer (to log) and is
//! not stored. Waiters block on one condition variable; completions wake them all.

use std::collections::HashMap;
use std::time::Instant;

use crate::sync::{Condvar, Mutex, lock};

/// Results by handle id, with their waiters.
#[derive(Debug)]
pub struct HandleTable<T> {
    state: Mutex<TableState<T>>,
    changed: Condvar,
}

/// What a wait ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitOutcome<T> {
    /// The result.
    Ready(T),
    /// No such handle: never created, or released by every holder.
    Unknown,
    /// The deadline passed first.
    TimedOut,
    /// The table was closed (the runtime stopped) before the handle completed.
    Closed,
    /// The caller's condition to stop waiting became true first.
    Interrupted,
}

/// What a completion found.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion<T> {
    /// Stored for its holders.
    Stored,
    /// Nobody holds the handle any more: here is the result back, to log.
    Detached(T),
}

#[derive(Debug)]
struct TableState<T> {
    slots: HashMap<u64, Slot<T>>,
    closed: bool,
}

#[derive(Debug)]
struct Slot<T> {
    /// Holders that have not released the handle.
    holders: u32,
    result: Option<T>,
}

impl<T: Clone> HandleTable<T> {
    /// An empty, open table.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(TableState {
                slots: HashMap::new(),
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Creates handle `id`, pending, with one holder. Ids come from the caller.
    pub fn insert_pending(&self, id: u64) {
        let slot = Slot {
            holders: 1,
            result: None,
        };
        lock(&self.state).slots.insert(id, slot);
    }

    /// Creates handle `id` already holding `value`, with one holder.
    pub fn insert_ready(&self, id: u64, value: T) {
        let slot = Slot {
            holders: 1,
            result: Some(value),
        };
        lock(&self.state).slots.insert(id, slot);
        self.changed.notify_all();
    }

    /// Adds a holder to `id`; false if it no longer exists.
    pub fn retain(&self, id: u64) -> bool {
        match lock(&self.state).slots.get_mut(&id) {
            Some(slot) => {
                slot.holders += 1;
                true
            }
            None => false,
        }
    }

    /// Fills in handle `id` and wakes its waiters.
    pub fn complete(&self, id: u64, value: T) -> Completion<T> {
        let mut state = lock(&self.state);
        match state.slots.get_mut(&id) {
            Some(slot) if slot.holders > 0 => {
                slot.result = Some(value);
                drop(state);
                self.changed.notify_all();
                Completion::Stored
            }
            _ => {
                state.slots.remove(&id);
                drop(state);
                // Someone may be waiting on a handle it already released: it
                // must see `Unknown`, not sleep forever.
                self.changed.notify_all();
                Completion::Detached(value)
            }
        }
    }

    /// What [`wait`](Self::wait) would return now, without blocking; `None` while
    /// `id` is pending in an open table.
    pub fn poll(&self, id: u64) -> Option<WaitOutcome<T>> {
        let state = lock(&self.state);
        match state.slots.get(&id) {
            None => Some(WaitOutcome::Unknown),
            Some(Slot {
                result: Some(value),
                ..
            }) => Some(WaitOutcome::Ready(value.clone())),
            Some(_) if state.closed => Some(WaitOutcome::Closed),
            Some(_) => None,
        }
    }

    /// Blocks until `id` completes, the deadline passes, or the table closes. The
    /// result stays in the table for further waits until released. (The runtime
    /// uses [`wait_unless`](Self::wait_unless); the tests, this.)
    #[cfg(any(test, loom))]
    pub fn wait(&self, id: u64, deadline: Option<Instant>) -> WaitOutcome<T> {
        self.wait_unless(id, deadline, || false)
    }

    /// [`wait`](Self::wait), also ending with [`WaitOutcome::Interrupted`] once
    /// `interrupted` returns true. Whoever makes it true must then call
    /// [`wake_all`](Self::wake_all); it is checked with the table locked, so
    /// that wake-up cannot be missed.
    pub fn wait_unless(
        &self,
        id: u64,
        deadline: Option<Instant>,
        interrupted: impl Fn() -> bool,
    ) -> WaitOutcome<T> {
        let mut state = lock(&self.state);
        loop {
            match state.slots.get(&id) {
                None => return WaitOutcome::Unknown,
                Some(Slot {
                    result: Some(value),
                    ..
                }) => return WaitOutcome::Ready(value.clone()),
                Some(_) if state.closed => return WaitOutcome::Closed,
                Some(_) if interrupted() => return WaitOutcome::Interrupted,
                Some(_) => {}
            }
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return WaitOutcome::TimedOut;
                    };
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Drops one holder of `id`. The last one frees a result, or detaches a
    /// pending handle.
    pub fn release(&self, id: u64) {
        let mut state = lock(&self.state);
        let Some(slot) = state.slots.get_mut(&id) else {
            return;
        };
        slot.holders = slot.holders.saturating_sub(1);
        if slot.holders == 0 && slot.result.is_some() {
            state.slots.remove(&id);
        }
    }

    /// Wakes every waiter to check its condition again (see
    /// [`wait_unless`](Self::wait_unless)).
    pub fn wake_all(&self) {
        let _state = lock(&self.state);
        self.changed.notify_all();
    }

    /// Wakes every waiter of a pending handle with [`WaitOutcome::Closed`], now and
    /// for every later wait.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }

    /// Whether `id` is still in the table (held, or pending and detached).
    pub fn contains(&self, id: u64) -> bool {
        lock(&self.state).slots.contains_key(&id)
    }

    /// Number of handles held (pending, detached or done).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.state).slots.len()
    }
}

impl<T: Clone> Default for HandleTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wait_sees_completion_and_release_detaches() {
        let table = HandleTable::new();
        table.insert_pending(1);
        assert_eq!(table.complete(1, 7), Completion::Stored);
        assert_eq!(table.wait(1, None), WaitOutcome::Ready(7));
        table.release(1);
        assert_eq!(table.wait(1, None), WaitOutcome::Unknown);

        table.insert_pending(2);
        table.release(2);
        assert_eq!(table.complete(2, 9), Completion::Detached(9));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn shared_handles_live_until_the_last_release() {
        let table = HandleTable::new();
        table.insert_pending(1);
        assert!(table.retain(1));
        table.release(1);
        assert_eq!(table.complete(1, 3), Completion::Stored);
        assert_eq!(table.poll(1), Some(WaitOutcome::Ready(3)));
        table.release(1);
        assert_eq!(table.poll(1), Some(WaitOutcome::Unknown));
        assert!(!table.retain(1));
    }

    #[test]
    fn poll_never_blocks_and_agrees_with_wait() {
        let table: HandleTable<u8> = HandleTable::new();
        assert_eq!(table.poll(1), Some(WaitOutcome::Unknown));
        table.insert_pending(1);
        assert_eq!(table.poll(1), None, "pending");
        assert_eq!(table.complete(1, 4), Completion::Stored);
        assert_eq!(table.poll(1), Some(WaitOutcome::Ready(4)));
        table.insert_pending(2);
        table.close();
        assert_eq!(table.poll(2), Some(WaitOutcome::Closed));
        assert_eq!(table.wait(2, None), WaitOutcome::Closed);
    }

    #[test]
    fn deadline_and_close_end_waits() {
        let table: HandleTable<u8> = HandleTable::new();
        table.insert_pending(1);
        let soon = Instant::now() + Duration::from_millis(5);
        assert_eq!(table.wait(1, Some(soon)), WaitOutcome::TimedOut);
        table.close();
        assert_eq!(table.wait(1, None), WaitOutcome::Closed);
    }
}
