//! [`MpiTransport`]: the handle the runtime sends through.

use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use herald_tcp::{EventHook, EventSender, MeshEvent};

use crate::config::MpiConfig;
use crate::error::MpiError;
use crate::progress::{self, Command};

/// herald's links over MPI: frames travel on a duplicate of the world (or of the
/// application's communicator), so they never match the application's receives.
/// One progress thread makes every MPI call; [`send`](Self::send) and
/// [`close_peer`](Self::close_peer) only queue work for it and never block.
///
/// Received frames come out of the receiver [`start`](Self::start) returns as
/// soon as [`MpiOpener::open`] is called (until then they wait in MPI), as
/// [`MeshEvent::Frame`]; a peer that closed its side (its runtime shut down, or
/// it declared this rank down) or whose link failed as [`MeshEvent::PeerDown`],
/// once, with no frame from it after that.
pub struct MpiTransport {
    rank: u32,
    size: u32,
    initialised_mpi: bool,
    commands: Sender<Command>,
    events: EventSender,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl MpiTransport {
    /// Joins MPI (initialising it with `MPI_THREAD_MULTIPLE` if the application
    /// has not; then herald finalises it at [`shutdown`](Self::shutdown)),
    /// duplicates the communicator and checks that every rank shares the frame
    /// limit and `config.agree`. Collective over the communicator.
    pub fn start(config: MpiConfig) -> Result<(MpiTransport, Receiver<MeshEvent>), MpiError> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let events_tx = EventSender::new(events_tx);
        let hooks = events_tx.clone();
        let (commands, commands_rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("herald-mpi-progress".into())
            .spawn({
                let commands = commands.clone();
                move || progress::run(config, (commands, commands_rx), events_tx, ready_tx)
            })
            .map_err(|e| MpiError::Thread(format!("cannot start it: {e}")))?;
        match ready.recv() {
            Ok(Ok((rank, size, initialised_mpi))) => Ok((
                MpiTransport {
                    rank,
                    size,
                    initialised_mpi,
                    commands,
                    events: hooks,
                    thread: Mutex::new(Some(thread)),
                },
                events,
            )),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(MpiError::Thread("it ended before joining MPI".into()))
            }
        }
    }

    /// Calls `hook` on the progress thread after each event it puts in the
    /// channel, so the receiver can handle it there at once; `hook` must not
    /// block (nor make MPI calls). Returns false if a hook was set already.
    pub fn on_events(&self, hook: EventHook) -> bool {
        self.events.set_hook(hook)
    }

    /// What starts the delivery of received frames: call it once whatever
    /// handles them (e.g. the runtime with its executors) is in place.
    pub fn opener(&self) -> MpiOpener {
        MpiOpener {
            commands: self.commands.clone(),
        }
    }

    /// This process's rank in herald's communicator.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The number of ranks in herald's communicator.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether herald initialised MPI (and so finalises it at shutdown).
    pub fn initialised_mpi(&self) -> bool {
        self.initialised_mpi
    }

    /// Queues `frame` for node `to`. Frames to one node arrive in order.
    pub fn send(&self, to: u32, frame: Vec<u8>) {
        let _ = self.commands.send(Command::Send { to, frame });
    }

    /// Closes the link to `to` for good: what was queued still goes, later
    /// frames are dropped, nothing more from `to` is delivered, and `to` is told
    /// (it sees [`MeshEvent::PeerDown`] for this rank).
    pub fn close_peer(&self, to: u32) {
        let _ = self.commands.send(Command::Close { to });
    }

    /// Sends what is queued, closes every link, waits (10 s at most) for every
    /// peer to close its side, frees herald's communicator, and finalises MPI if
    /// herald initialised it. Every rank of the job is expected to shut down.
    pub fn shutdown(self) {
        self.stop();
    }

    fn stop(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = self.commands.send(Command::Shutdown);
            if thread.join().is_err() {
                tracing::error!("herald-mpi: the progress thread panicked");
            }
        }
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the delivery of received frames (see [`MpiTransport::opener`]).
pub struct MpiOpener {
    commands: Sender<Command>,
}

impl MpiOpener {
    /// Delivers received frames from now on.
    pub fn open(self) {
        let _ = self.commands.send(Command::Open);
    }
}
