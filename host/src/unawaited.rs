//! Registrations made through the C ABI that no caller can wait for: those of
//! `herald_register_on_load` in a library loaded outside herald (plain `dlopen`,
//! Python's `ctypes`), whose constructor runs on the loading thread with no
//! herald load around it. They are kept per thread until a safe point waits for
//! them ([`Runtime::settle_unawaited`](crate::Runtime::settle_unawaited):
//! herald-python's `wait_pending`, the end of a program), so their failures
//! reach the program instead of a log line. Registrations refused at once (no
//! handle) are kept the same way wherever they are made; a herald load, an
//! invocation or a task around them takes them and fails with them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;

/// One registration nobody has waited for yet.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A handle this table holds.
    Handle(u64),
    /// A registration refused at once (it has no handle): the error text.
    Refused(String),
}

/// The unawaited registrations of one runtime, by the thread that made them.
#[derive(Debug, Default)]
pub(crate) struct Unawaited {
    by_thread: Mutex<HashMap<ThreadId, Vec<Entry>>>,
}

impl Unawaited {
    /// Adds an entry for the calling thread; `done_ok` tells which held handles
    /// have already succeeded, so they are dropped (and released by the caller)
    /// rather than kept.
    pub(crate) fn push(&self, entry: Entry, done_ok: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut table = self.lock();
        let entries = table.entry(std::thread::current().id()).or_default();
        let mut released = Vec::new();
        entries.retain(|entry| match entry {
            Entry::Handle(handle) if done_ok(*handle) => {
                released.push(*handle);
                false
            }
            _ => true,
        });
        entries.push(entry);
        released
    }

    /// Takes the entries of the calling thread, or of every thread.
    pub(crate) fn take(&self, all_threads: bool) -> Vec<Entry> {
        let mut table = self.lock();
        if all_threads {
            table.drain().flat_map(|(_, entries)| entries).collect()
        } else {
            table
                .remove(&std::thread::current().id())
                .unwrap_or_default()
        }
    }

    /// Takes the refusals of the calling thread, leaving its handles.
    pub(crate) fn take_refused(&self) -> Vec<String> {
        let mut table = self.lock();
        let Some(entries) = table.get_mut(&std::thread::current().id()) else {
            return Vec::new();
        };
        let mut refused = Vec::new();
        entries.retain(|entry| match entry {
            Entry::Refused(text) => {
                refused.push(text.clone());
                false
            }
            Entry::Handle(_) => true,
        });
        refused
    }

    /// How many entries the calling thread (or every thread) has.
    pub(crate) fn count(&self, all_threads: bool) -> usize {
        let table = self.lock();
        if all_threads {
            table.values().map(Vec::len).sum()
        } else {
            table.get(&std::thread::current().id()).map_or(0, Vec::len)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Vec<Entry>>> {
        self.by_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_thread_and_finished_ones_are_dropped() {
        let table = Unawaited::default();
        assert!(table.push(Entry::Handle(1), |_| false).is_empty());
        assert_eq!(table.push(Entry::Handle(2), |h| h == 1), vec![1]);
        table.push(Entry::Refused("no".into()), |_| false);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(table.count(false), 0);
                table.push(Entry::Handle(9), |_| false);
            });
        });
        assert_eq!(table.count(false), 2);
        assert_eq!(table.count(true), 3);
        assert_eq!(table.take_refused(), vec!["no".to_owned()]);
        assert_eq!(table.count(false), 1);
        table.push(Entry::Refused("again".into()), |_| false);
        assert_eq!(table.take(false).len(), 2);
        assert_eq!(table.take(true).len(), 1);
        assert_eq!(table.count(true), 0);
    }
}
