//! The progress thread: the only thread that calls MPI for herald. It receives
//! whatever arrives on herald's communicator, starts the sends the runtime
//! queues, completes them, and pauses adaptively while nothing happens.

use std::os::raw::c_int;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use herald_tcp::{EventSender, MeshEvent};
use mpi::ffi::MPI_Request;

use crate::backoff::{Backoff, Pause};
use crate::config::MpiConfig;
use crate::error::MpiError;
use crate::finalize::FinalizeWatch;
use crate::raw::{self, Comm};
use crate::setup::{self, Joined};

/// What the runtime asks of the progress thread.
pub(crate) enum Command {
    /// Send a frame.
    Send { to: u32, frame: Vec<u8> },
    /// Close the link to a node for good (after what was queued for it).
    Close { to: u32 },
    /// Start delivering received frames (until then they wait in MPI).
    Open,
    /// Send what is queued, say goodbye to every peer, leave MPI.
    Shutdown,
    /// The program called MPI_Finalize (herald still running): stop calling
    /// MPI at once, then drop `done`.
    MpiFinalizing { done: Sender<()> },
}

/// Why [`Progress::serve`] ended.
enum End {
    /// The runtime shut down (or dropped the transport).
    Shutdown,
    /// The program is finalising MPI (see [`Command::MpiFinalizing`]).
    MpiFinalizing(Sender<()>),
}

/// Tag of herald's frames on its communicator.
const FRAME_TAG: c_int = 1;
/// Tag of the empty message that closes a link: the last one a rank sends to a
/// peer (MPI keeps messages between two ranks in order, so every frame sent
/// before it is received before it).
const CLOSE_TAG: c_int = 2;
/// Most messages received in a row before the commands are looked at again.
const RECEIVE_BATCH: usize = 64;
/// Longest a shutting-down rank waits for its sends to complete and for every
/// peer to close its side.
const LINGER: Duration = Duration::from_secs(10);

/// Longest the program's MPI_Finalize under herald waits for the sends that
/// tell every peer this rank's links close (empty messages, sent eagerly).
const ABANDON_LINGER: Duration = Duration::from_secs(1);

/// (rank, size, whether herald initialised MPI) once joined, or why not.
pub(crate) type Ready = Result<(u32, u32, bool), MpiError>;

/// The progress thread's body.
pub(crate) fn run(
    config: MpiConfig,
    (commands_tx, commands): (Sender<Command>, Receiver<Command>),
    events: EventSender,
    ready: Sender<Ready>,
) {
    let joined = match setup::join(&config) {
        Ok(joined) => joined,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let owns_mpi = joined.universe.is_some();
    // Without it the program's MPI_Finalize before herald_finalize crashes this
    // thread's next MPI call; with it, herald only loses its peers.
    let watch = match FinalizeWatch::start(commands_tx) {
        Ok(watch) => Some(watch),
        Err(error) => {
            tracing::debug!(%error, "herald-mpi: cannot watch for MPI_Finalize");
            None
        }
    };
    if ready
        .send(Ok((joined.rank, joined.size, owns_mpi)))
        .is_err()
    {
        leave(joined, watch);
        return;
    }
    let mut progress = Progress::new(&joined, &config, events);
    match progress.serve(&commands) {
        End::Shutdown => {
            progress.linger();
            leave(joined, watch);
        }
        End::MpiFinalizing(done) => {
            progress.abandon();
            // MPI_Finalize deletes the attribute and finalises MPI (also when
            // herald initialised it: finalising it again would abort).
            drop(watch);
            std::mem::forget(joined.universe);
            drop(done);
        }
    }
}

/// Frees herald's communicator, and finalises MPI if herald initialised it.
fn leave(joined: Joined, watch: Option<FinalizeWatch>) {
    if let Some(watch) = watch {
        watch.stop();
    }
    raw::free(joined.comm);
    // Dropping the universe calls MPI_Finalize (on this thread, which initialised it).
    drop(joined.universe);
}

struct Progress {
    comm: Comm,
    rank: u32,
    max_frame_bytes: usize,
    events: EventSender,
    /// Sends in flight and their buffers, index for index.
    requests: Vec<MPI_Request>,
    buffers: Vec<Vec<u8>>,
    /// Links this rank closed (close_peer or shutdown).
    closed: Vec<bool>,
    /// Peers that closed their side or failed: nothing more comes from them.
    gone: Vec<bool>,
    /// Whether received frames are delivered yet (see `Command::Open`).
    open: bool,
    backoff: Backoff,
}

impl Progress {
    fn new(joined: &Joined, config: &MpiConfig, events: EventSender) -> Progress {
        let size = joined.size as usize;
        let mut gone = vec![false; size];
        gone[joined.rank as usize] = true;
        Progress {
            comm: joined.comm,
            rank: joined.rank,
            max_frame_bytes: config.max_frame_bytes,
            events,
            requests: Vec::new(),
            buffers: Vec::new(),
            closed: gone.clone(),
            gone,
            open: false,
            backoff: Backoff::new(config.poll),
        }
    }

    /// Runs until the runtime asks to shut down (or drops the transport), or
    /// the program finalises MPI.
    fn serve(&mut self, commands: &Receiver<Command>) -> End {
        loop {
            let mut active = false;
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if let Some(end) = self.handle(command) {
                            return end;
                        }
                        active = true;
                    }
                    Err(TryRecvError::Disconnected) => return End::Shutdown,
                    Err(TryRecvError::Empty) => break,
                }
            }
            if self.open {
                active |= self.receive_some();
            }
            active |= self.complete_sends();
            if active {
                self.backoff.active();
                continue;
            }
            match self.backoff.idle() {
                Pause::Spin => std::hint::spin_loop(),
                Pause::Yield => std::thread::yield_now(),
                // A command ends the sleep at once: sends never wait for a poll.
                Pause::Sleep(pause) => match commands.recv_timeout(pause) {
                    Ok(command) => {
                        if let Some(end) = self.handle(command) {
                            return end;
                        }
                        self.backoff.active();
                    }
                    Err(RecvTimeoutError::Disconnected) => return End::Shutdown,
                    Err(RecvTimeoutError::Timeout) => {}
                },
            }
        }
    }

    /// Closes every link, then lets the sends complete and waits for every peer
    /// to close its side, so that no message is left unmatched when the
    /// communicator is freed.
    fn linger(&mut self) {
        for node in 0..self.closed.len() as u32 {
            self.close(node);
        }
        let deadline = Instant::now() + LINGER;
        while !(self.requests.is_empty() && self.gone.iter().all(|g| *g)) {
            if Instant::now() > deadline {
                let waiting: Vec<usize> = (0..self.gone.len()).filter(|n| !self.gone[*n]).collect();
                tracing::warn!(
                    sends = self.requests.len(),
                    ?waiting,
                    "herald-mpi: leaving MPI with sends or peers still open after {LINGER:?}"
                );
                return;
            }
            let active = self.receive_some() | self.complete_sends();
            if !active {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// The program finalised MPI under herald: every peer is lost, and no MPI
    /// call is made any more. MPI still works while MPI_Finalize deletes the
    /// attributes (where this runs), so every peer is told first that this link
    /// closes: otherwise a peer still running would wait for ever for this rank
    /// (nothing else tells it), and this rank for it inside MPI_Finalize.
    fn abandon(&mut self) {
        // Not marked closed: the runtime still hears below that each is lost.
        for node in 0..self.closed.len() as u32 {
            if !self.closed[node as usize] {
                self.start_send(node, CLOSE_TAG, Vec::new());
            }
        }
        let deadline = Instant::now() + ABANDON_LINGER;
        while !self.requests.is_empty() && Instant::now() < deadline {
            if !self.complete_sends() {
                std::thread::yield_now();
            }
        }
        self.lose_everyone(
            "the program called MPI_Finalize before herald_finalize (call herald_finalize first)",
        );
        // Sends still in flight may read their buffers until MPI_Finalize ends.
        self.requests.clear();
        std::mem::forget(std::mem::take(&mut self.buffers));
    }

    /// Carries out `command`; returns how serving ends if it ends it.
    fn handle(&mut self, command: Command) -> Option<End> {
        match command {
            Command::Send { to, frame } => {
                if self.closed.get(to as usize) == Some(&false) {
                    self.start_send(to, FRAME_TAG, frame);
                }
            }
            Command::Close { to } => self.close(to),
            Command::Open => self.open = true,
            Command::Shutdown => return Some(End::Shutdown),
            Command::MpiFinalizing { done } => return Some(End::MpiFinalizing(done)),
        }
        None
    }

    fn close(&mut self, to: u32) {
        if let Some(closed @ false) = self.closed.get_mut(to as usize) {
            *closed = true;
            self.start_send(to, CLOSE_TAG, Vec::new());
        }
    }

    fn start_send(&mut self, to: u32, tag: c_int, frame: Vec<u8>) {
        if frame.len() > i32::MAX as usize {
            tracing::error!(
                to,
                len = frame.len(),
                "herald-mpi: frame too long for MPI, dropped"
            );
            return;
        }
        match raw::start_send(self.comm, to, tag, &frame) {
            Ok(request) => {
                self.requests.push(request);
                self.buffers.push(frame);
            }
            Err(error) => self.lost(to, format!("sending to node {to} over MPI: {error}")),
        }
    }

    /// Completes finished sends; true if any did.
    fn complete_sends(&mut self) -> bool {
        match raw::completed(&mut self.requests) {
            Ok(mut done) if !done.is_empty() => {
                // Highest index first, so each swap_remove moves an unfinished one.
                done.sort_unstable_by(|a, b| b.cmp(a));
                for index in done {
                    self.requests.swap_remove(index);
                    self.buffers.swap_remove(index);
                }
                true
            }
            Ok(_) => false,
            Err(error) => {
                // Which send failed is unknown: every peer is lost.
                self.requests.clear();
                self.buffers.clear();
                self.lose_everyone(&error);
                true
            }
        }
    }

    /// Receives what is waiting (a batch at most); true if anything was.
    fn receive_some(&mut self) -> bool {
        for received in 0..RECEIVE_BATCH {
            let probed = match raw::probe(self.comm) {
                Ok(Some(probed)) => probed,
                Ok(None) => return received > 0,
                Err(error) => {
                    self.lose_everyone(&error);
                    return true;
                }
            };
            let from = probed.source;
            let bytes = match raw::receive(self.comm, &probed) {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.lost(
                        from,
                        format!("receiving from node {from} over MPI: {error}"),
                    );
                    continue;
                }
            };
            if self.gone.get(from as usize) != Some(&false) {
                continue;
            }
            if probed.tag == CLOSE_TAG {
                self.gone[from as usize] = true;
                if !self.closed[from as usize] {
                    self.events.send(MeshEvent::PeerDown {
                        node: from,
                        reason: format!("node {from} closed its MPI link"),
                    });
                }
            } else if bytes.len() > self.max_frame_bytes {
                self.lost(
                    from,
                    format!(
                        "node {from} sent a frame of {} bytes, over the limit of {}",
                        bytes.len(),
                        self.max_frame_bytes
                    ),
                );
            } else if !self.closed[from as usize] {
                self.events.send(MeshEvent::Frame { from, bytes });
            }
        }
        true
    }

    /// The link to `node` failed: nothing more is delivered from it.
    fn lost(&mut self, node: u32, reason: String) {
        let Some(gone @ false) = self.gone.get_mut(node as usize) else {
            return;
        };
        *gone = true;
        tracing::warn!(node, %reason, "herald-mpi: link lost");
        if !self.closed[node as usize] {
            self.events.send(MeshEvent::PeerDown { node, reason });
        }
    }

    fn lose_everyone(&mut self, error: &str) {
        for node in 0..self.gone.len() as u32 {
            if node != self.rank {
                self.lost(node, format!("herald's MPI communicator failed: {error}"));
            }
        }
        // Nothing can be sent any more either.
        self.closed.iter_mut().for_each(|c| *c = true);
    }
}
