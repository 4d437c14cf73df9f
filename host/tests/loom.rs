//! Model checks of the host's shared state with `loom`: the handle table with its
//! waiters, and the per-thread context (current invocation, loads in progress).
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=/work/target-host cargo test -p herald-host --release --test loom`
//! (without `--cfg loom` this file is empty).
#![cfg(loom)]

use std::sync::Arc as StdArc;

use herald_core::{InvocationId, Key};
use herald_host::loom_api::{
    Combiner, Completion, HandleTable, InvocationFrame, WaitOutcome, deadlock_reason,
    enter_invocation, enter_loading, placement, record_during_load,
};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

/// A waiter blocked before the completion, or arriving after it, sees the result.
#[test]
fn completion_reaches_a_waiter_in_every_order() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        table.insert_pending(1);
        let waiter = {
            let table = table.clone();
            thread::spawn(move || table.wait(1, None))
        };
        assert_eq!(table.complete(1, 7), Completion::Stored);
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Ready(7));
    });
}

/// Two holders: one releases while the event loop completes; the other still
/// gets the result, and its release frees the slot.
#[test]
fn release_racing_completion_keeps_the_result_for_other_holders() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        table.insert_pending(1);
        assert!(table.retain(1));
        let releaser = {
            let table = table.clone();
            thread::spawn(move || table.release(1))
        };
        let completer = {
            let table = table.clone();
            thread::spawn(move || table.complete(1, 5))
        };
        assert_eq!(completer.join().unwrap(), Completion::Stored);
        releaser.join().unwrap();
        assert_eq!(table.wait(1, None), WaitOutcome::Ready(5));
        table.release(1);
        assert!(!table.contains(1));
    });
}

/// The only holder releases while the handle completes: whichever comes first,
/// nothing is left behind, and a detached result goes back to the completer.
#[test]
fn last_release_racing_completion_leaves_nothing() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        table.insert_pending(1);
        let releaser = {
            let table = table.clone();
            thread::spawn(move || table.release(1))
        };
        let completion = table.complete(1, 9);
        releaser.join().unwrap();
        assert!(!table.contains(1));
        assert!(matches!(
            completion,
            Completion::Stored | Completion::Detached(9)
        ));
    });
}

/// A waiter on a handle whose last holder released it is woken when the result
/// arrives and detaches, instead of sleeping forever.
#[test]
fn waiting_on_a_released_handle_ends_when_it_completes() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        table.insert_pending(1);
        table.release(1);
        let waiter = {
            let table = table.clone();
            thread::spawn(move || table.wait(1, None))
        };
        assert_eq!(table.complete(1, 3), Completion::Detached(3));
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Unknown);
    });
}

/// Closing the table (runtime shutdown) wakes a blocked waiter.
#[test]
fn close_wakes_waiters() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        table.insert_pending(1);
        let waiter = {
            let table = table.clone();
            thread::spawn(move || table.wait(1, None))
        };
        table.close();
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Closed);
    });
}

/// A waiter whose condition is made true (a refusal from the wait-for graph)
/// and then woken with `wake_all` never sleeps through it, whether it was
/// already asleep or still on its way.
#[test]
fn interrupting_a_wait_is_never_missed() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        table.insert_pending(1);
        let refused = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (table, refused) = (table.clone(), refused.clone());
            thread::spawn(move || table.wait_unless(1, None, || refused.load(Ordering::SeqCst)))
        };
        refused.store(true, Ordering::SeqCst);
        table.wake_all();
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Interrupted);
    });
}

/// The current invocation belongs to its thread: another thread's registrations
/// are top-level, and only the invocation's own thread is refused a wait on its key.
#[test]
fn current_invocation_is_per_thread() {
    loom::model(|| {
        let key = Key([3; 32]);
        let worker = thread::spawn(move || {
            let _frame = enter_invocation(InvocationFrame {
                runtime: 1,
                id: InvocationId(4),
                keys: StdArc::from(vec![key]),
            });
            let nested = placement(1).parent.map(|f| f.id);
            let refused = deadlock_reason(1, Some(key)).is_some();
            (nested, refused)
        });
        let other = thread::spawn(move || {
            (
                placement(1).parent.is_none(),
                deadlock_reason(1, Some(key)).is_none(),
            )
        });
        assert_eq!(worker.join().unwrap(), (Some(InvocationId(4)), true));
        assert_eq!(other.join().unwrap(), (true, true));
        assert!(
            placement(1).parent.is_none(),
            "the frame was popped with its guard"
        );
    });
}

/// A registration made during a load, and completed by the event loop before or
/// after the load's safe point, is found and awaited there; the load's holder is
/// released after. Waiting during the load itself is refused.
#[test]
fn registrations_made_during_a_load_are_awaited_at_its_safe_point() {
    loom::model(|| {
        let table = Arc::new(HandleTable::<u32>::new());
        let loading = enter_loading();
        // What Shared::register does on a constructor's call: a pending handle held
        // by the caller, recorded in the load's frame with a holder of its own.
        table.insert_pending(8);
        assert!(record_during_load(1, 8));
        assert!(table.retain(8));
        table.release(8); // the constructor drops its handle at once
        assert!(
            deadlock_reason(1, None).is_some(),
            "no waiting inside a load"
        );
        let event_loop = {
            let table = table.clone();
            thread::spawn(move || table.complete(8, 1))
        };
        let made = loading.finish();
        assert_eq!(made, vec![(1, 8)]);
        assert_eq!(table.wait(8, None), WaitOutcome::Ready(1));
        table.release(8);
        assert_eq!(event_loop.join().unwrap(), Completion::Stored);
        assert!(!table.contains(8));
    });
}

/// The event loop runs on whichever thread brings work (`Combiner`): in every
/// interleaving of two threads that each queue an item and then run (the
/// second may find the first running, and leave its item to it), every item is
/// handled, by one thread at a time.
#[test]
fn combined_runs_handle_every_queued_item_one_thread_at_a_time() {
    use loom::sync::atomic::AtomicUsize;

    struct Queue {
        queued: AtomicUsize,
        inside: AtomicUsize,
    }
    loom::model(|| {
        let queue = Arc::new(Queue {
            queued: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
        });
        let combiner = Arc::new(Combiner::new(0usize));
        let bring = |queue: Arc<Queue>, combiner: Arc<Combiner<usize>>| {
            move || {
                queue.queued.fetch_add(1, Ordering::Release);
                combiner.run(
                    |handled| {
                        let runners = queue.inside.fetch_add(1, Ordering::AcqRel);
                        assert_eq!(runners, 0, "two runners");
                        *handled += queue.queued.swap(0, Ordering::AcqRel);
                        queue.inside.fetch_sub(1, Ordering::AcqRel);
                    },
                    || panic!("two threads never make sixteen rounds in a row"),
                );
            }
        };
        let other = thread::spawn(bring(queue.clone(), combiner.clone()));
        bring(queue.clone(), combiner.clone())();
        other.join().unwrap();
        let mut handled = 0;
        combiner.run(|count| handled = *count, || {});
        assert_eq!(handled, 2, "an item was left in the queue");
    });
}
