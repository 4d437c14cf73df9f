//! Who runs the event loop: the thread that brings it work. A command from the
//! API or a worker, or a frame from a transport that calls back on its own thread
//! (herald-tcp's I/O thread), is queued, and then the same thread handles it and
//! everything else queued, unless another thread is doing so already (that thread
//! then goes round once more). So a frame is answered on the thread that read it,
//! a registration leaves on the caller's thread, and no hand-off to a thread of
//! the host's own (a wake-up, tens of microseconds on a busy machine) stands
//! between the network and the core.
//!
//! The host's own thread (the "event loop thread") is left with what nobody
//! brings: timed work (batches, warnings), the frames of transports without a
//! hook, and the end of the loop (closing a transport may block, and must not run
//! on the transport's own thread).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};
use herald_tcp::MeshEvent;

use crate::context;
use crate::event_loop::EventLoop;
use crate::shared::{Command, Shared};
use crate::sync::{AtomicU8, Mutex, Ordering, lock};

/// How long the event loop thread sleeps when nothing is due: only a bound.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// How long the event loop thread waits when timed work is overdue because
/// another thread is running the loop (see `run_loop_thread`).
const OVERDUE_RECHECK: Duration = Duration::from_millis(1);

/// How often the event loop thread looks at the frames' channel of a transport
/// that calls back after each frame (see `run_loop_thread`).
const UNHOOKED_CHECK: Duration = Duration::from_millis(50);

/// The event loop, the queues that feed it, and the way to its thread.
pub(crate) struct Driver {
    core: Combiner<Option<EventLoop>>,
    commands: Sender<Command>,
    queued_commands: Receiver<Command>,
    events: Receiver<MeshEvent>,
    notes: Sender<Note>,
    timing: Mutex<Timing>,
    /// Whether the loop takes frames now (let in, and the channel still open):
    /// the event loop thread watches the channel only then.
    watch_events: AtomicBool,
}

/// What the event loop thread is told.
pub(crate) enum Note {
    /// Timed work is due earlier than it planned, or events were let in.
    Wake,
    /// The loop is over: finish it (this may block).
    Finish(Box<EventLoop>),
}

/// When timed work is due, and when the event loop thread plans to wake.
#[derive(Default)]
struct Timing {
    due: Option<Instant>,
    planned: Option<Instant>,
}

impl Driver {
    /// A driver with no loop yet ([`Driver::install`] gives it one); returns the
    /// receiving end of the event loop thread's notes.
    pub(crate) fn new(events: Receiver<MeshEvent>) -> (Driver, Receiver<Note>) {
        let (commands, queued_commands) = crossbeam_channel::unbounded();
        let (notes, noted) = crossbeam_channel::unbounded();
        let driver = Driver {
            core: Combiner::new(None),
            commands,
            queued_commands,
            events,
            notes,
            timing: Mutex::new(Timing::default()),
            watch_events: AtomicBool::new(false),
        };
        (driver, noted)
    }

    /// Gives the driver its loop, before any command or event is handled.
    pub(crate) fn install(&self, event_loop: EventLoop) {
        self.watch_events.store(
            event_loop.events_open(),
            std::sync::atomic::Ordering::Release,
        );
        *lock(&self.core.state) = Some(event_loop);
    }

    /// Queues `command` for the loop; [`Driver::run`] handles it. Never blocks.
    pub(crate) fn queue(&self, command: Command) {
        // The receiver lives as long as the driver: this cannot fail.
        let _ = self.commands.send(command);
    }

    /// Handles everything queued (commands, and events once let in) and what is
    /// due, on this thread, unless another thread is at it (it then goes round
    /// again for what this thread queued). Never blocks. Call it after queueing,
    /// holding no lock of the host's: the loop completes handles and calls hooks.
    pub(crate) fn run(&self) {
        self.core.run(
            |core| context::in_event_loop(|| self.step(core)),
            // Busy for long: the loop's own thread takes over, so that a
            // caller's (or the transport's) thread is not kept for ever.
            || {
                let _ = self.notes.send(Note::Wake);
            },
        );
    }

    /// The frames of the transport, if the event loop thread should watch them.
    fn watched_events(&self) -> Option<&Receiver<MeshEvent>> {
        self.watch_events
            .load(std::sync::atomic::Ordering::Acquire)
            .then_some(&self.events)
    }

    fn step(&self, core: &mut Option<EventLoop>) {
        let Some(event_loop) = core.as_mut() else {
            // Over: what comes now is never handled. Dropping it drops the answer
            // channel of a `quiesce`, which then returns.
            while self.queued_commands.try_recv().is_ok() {}
            return;
        };
        let was_open = event_loop.events_open();
        event_loop.step(&self.queued_commands, &self.events);
        if event_loop.is_over() {
            if let Some(event_loop) = core.take() {
                let _ = self.notes.send(Note::Finish(Box::new(event_loop)));
            }
            return;
        }
        let due = event_loop.next_due();
        let opened = !was_open && event_loop.events_open();
        self.watch_events.store(
            event_loop.events_open(),
            std::sync::atomic::Ordering::Release,
        );
        let mut timing = lock(&self.timing);
        timing.due = due;
        let sooner = due.is_some_and(|due| timing.planned.is_none_or(|planned| due < planned));
        if sooner || opened {
            timing.planned = due;
            let _ = self.notes.send(Note::Wake);
        }
    }

    /// When the event loop thread should next run: due work, or a bound. Recorded
    /// as its plan, so that work due sooner wakes it.
    fn plan(&self) -> Instant {
        let mut timing = lock(&self.timing);
        let wake = timing.due.unwrap_or_else(|| Instant::now() + IDLE_WAKE);
        timing.planned = Some(wake);
        wake
    }
}

/// The event loop thread: runs the loop when timed work is due, when a transport
/// without a hook (`hooked` false) has frames (polling for `poll_window` after
/// each, since a reply usually follows within it), and finishes the loop when it
/// is over.
pub(crate) fn run_loop_thread(
    shared: Arc<Shared>,
    notes: Receiver<Note>,
    hooked: bool,
    poll_window: Duration,
) {
    let driver = &shared.driver;
    let mut last_event: Option<Instant> = None;
    loop {
        driver.run();
        let mut wake = driver.plan();
        if wake <= Instant::now() {
            // Overdue: another thread holds the loop (a run here would have done
            // the timed work). It goes round again for us; check back shortly
            // rather than spin.
            wake = Instant::now() + OVERDUE_RECHECK;
        }
        if hooked && driver.watched_events().is_some() {
            // A safety net: frames handed to the runtime in a channel other than
            // the transport's own (a program that forwards them) get no hook;
            // they wait at most this long, never for ever.
            wake = wake.min(Instant::now() + UNHOOKED_CHECK);
        }
        let events = driver.watched_events().filter(|_| !hooked);
        let polling = events.is_some() && last_event.is_some_and(|at| at.elapsed() < poll_window);
        let mut select = Select::new();
        let noted = select.recv(&notes);
        let event_index = events.map(|events| select.recv(events));
        let ready = if polling {
            select.try_ready().ok()
        } else {
            select.ready_deadline(wake).ok()
        };
        match ready {
            Some(index) if index == noted => match notes.try_recv() {
                Ok(Note::Finish(event_loop)) => {
                    event_loop.finish();
                    // What was queued meanwhile is dropped (see `Driver::step`).
                    driver.run();
                    return;
                }
                Ok(Note::Wake) | Err(_) => {}
            },
            Some(index) if Some(index) == event_index => last_event = Some(Instant::now()),
            Some(_) => {}
            None if polling => std::thread::yield_now(),
            None => {}
        }
    }
}

/// A lock that whoever brings work tries to take: the holder does every thread's
/// queued work, and a thread that finds it taken leaves its work to the holder,
/// who goes round once more. Nobody waits for anybody.
pub struct Combiner<S> {
    state: Mutex<S>,
    flag: AtomicU8,
}

/// Nobody is running.
const IDLE: u8 = 0;
/// A thread is running the work.
const RUNNING: u8 = 1;
/// A thread is running the work, and another queued more since it began.
const AGAIN: u8 = 2;
/// Runs in a row after which a thread hands the work off (see [`Combiner::run`]).
pub const MAX_ROUNDS: usize = 16;

impl<S> Combiner<S> {
    /// A combiner around `state`.
    pub fn new(state: S) -> Combiner<S> {
        Combiner {
            state: Mutex::new(state),
            flag: AtomicU8::new(IDLE),
        }
    }

    /// Runs `work` on the state, again and again until no other thread asked for
    /// a run meanwhile; or, if another thread is running, makes it run once more
    /// and returns at once. Work queued before this call is seen by a run that
    /// starts after it. `work` must be the same for every caller (it does
    /// whatever is queued), since it may be another thread's `work` that runs.
    /// After [`MAX_ROUNDS`] runs in a row this thread stops and calls `hand_off`,
    /// which must make some thread call `run` again soon.
    pub fn run(&self, mut work: impl FnMut(&mut S), hand_off: impl FnOnce()) {
        let mut seen = self.flag.load(Ordering::Acquire);
        loop {
            let next = if seen == IDLE { RUNNING } else { AGAIN };
            match self
                .flag
                .compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if seen == IDLE => break,
                Ok(_) => return,
                Err(actual) => seen = actual,
            }
        }
        // A panic in `work` (a bug) must not leave the flag set, or no thread
        // would ever run again.
        let unstick = Unstick(&self.flag);
        for round in 1.. {
            work(&mut lock(&self.state));
            if self
                .flag
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return std::mem::forget(unstick);
            }
            // AGAIN: another thread queued work while this one ran.
            if round == MAX_ROUNDS {
                self.flag.store(IDLE, Ordering::Release);
                std::mem::forget(unstick);
                return hand_off();
            }
            self.flag.swap(RUNNING, Ordering::AcqRel);
        }
    }
}

/// Clears the combiner's flag if the runner unwinds.
struct Unstick<'a>(&'a AtomicU8);

impl Drop for Unstick<'_> {
    fn drop(&mut self) {
        self.0.store(IDLE, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A thread asked to go round again and again stops after `MAX_ROUNDS` runs
    /// and hands off; the next caller then runs at once.
    #[test]
    fn a_runner_kept_busy_hands_off_after_max_rounds() {
        let combiner = Combiner::new(0usize);
        let mut handed_off = 0;
        combiner.run(
            |rounds| {
                *rounds += 1;
                // Another thread queues work while this one runs: the call
                // returns at once and asks for one more round.
                combiner.run(|_| unreachable!("a second runner"), || unreachable!());
            },
            || handed_off += 1,
        );
        assert_eq!(handed_off, 1);
        let mut rounds = 0;
        combiner.run(|count| rounds = *count, || unreachable!());
        assert_eq!(rounds, MAX_ROUNDS);
    }

    /// With nobody else queueing, one run does the work once.
    #[test]
    fn a_quiet_run_does_the_work_once() {
        let combiner = Combiner::new(0usize);
        combiner.run(|count| *count += 1, || unreachable!());
        let mut count = 0;
        combiner.run(|seen| count = *seen, || unreachable!());
        assert_eq!(count, 1);
    }

    /// A run that panics (a bug) leaves the combiner free for the next one.
    #[test]
    fn a_panicking_run_does_not_stop_later_runs() {
        let combiner = Combiner::new(0usize);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            combiner.run(|_| panic!("a bug"), || unreachable!())
        }));
        assert!(panicked.is_err());
        let mut ran = false;
        combiner.run(|_| ran = true, || unreachable!());
        assert!(ran);
    }
}
