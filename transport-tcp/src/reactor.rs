//! The I/O thread: one readiness loop (mio) owns the listener and every
//! connection of this rank, whatever the size of the job.
//!
//! Links are made on demand: the first frame for a rank dials it (retrying with
//! back-off while it is not reachable yet), unless that rank has already dialled
//! us, in which case its connection carries our frames too. Each rank's frames to
//! one peer travel on one connection for the life of the job, so they arrive in
//! order. A connection that has carried nothing but the handshake can close
//! without consequence; once in use, its loss, its silence for the peer timeout,
//! a record that fails authentication, or a queue grown past its bound is the
//! loss of the peer, reported once as [`MeshEvent::PeerDown`].

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::os::fd::AsRawFd;

use crate::conn::{Conn, ConnError, READ_CHUNK, Received};
use crate::error::{HandshakeError, TcpError};
use crate::events::{EventSender, PollGate};
use crate::frame::Control;
use crate::handshake::{Expect, Handshake, Hello, Identity, JOINING};
use crate::joins::JoinOrder;
use crate::mesh::MeshEvent;
use crate::outlet::Outlet;
use crate::refusals::Refusals;
use crate::seal::{Kind, RECORD_OVERHEAD};
use crate::stats::PeerStats;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Largest control record accepted whatever the frame limit (address tables).
const CONTROL_LIMIT: usize = 1 << 20;
/// A stranger must prove the secret within this time of connecting.
const UNAUTHENTICATED_DEADLINE: Duration = Duration::from_secs(3);
/// At most this many connections may wait to prove the secret; the oldest is
/// dropped for a newer one, so a flood of idle connections costs bounded memory
/// and file descriptors, and a real rank (which proves itself within a round
/// trip, and retries) gets through.
const MAX_UNAUTHENTICATED: usize = 512;
/// Longest a dialled connection may take to finish the handshake and hellos.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause between attempts to reach a rank.
const FIRST_RETRY: Duration = Duration::from_millis(5);
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How long an orderly close waits for peers to close their side.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How far past the ranks it knows a rank may address ranks that joined later.
const MAX_UNKNOWN_RANKS: usize = 1 << 16;
/// Most commands handled between two looks at the sockets.
const COMMAND_BATCH: usize = 256;
/// Most turns of reads (see [`READS_PER_TURN`](crate::conn::READS_PER_TURN))
/// a connection gets when it is drained before its peer is reported lost: more
/// than a socket's receive buffer holds.
const DRAIN_TURNS: usize = 64;
/// Pause after `accept` failed (out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a readiness event says of a connection.
#[derive(Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// The peer closed its side, or the socket failed (or may have): read on
    /// past a short read, to the end.
    closed: bool,
}

impl Ready {
    /// A connection that stopped reading at the bound of one turn: the event
    /// that announced a close may have come before it, and will not again.
    const READ_ON: Ready = Ready {
        readable: true,
        writable: false,
        closed: true,
    };
}

/// What the [`Mesh`](crate::Mesh) handle and the I/O thread share.
pub(crate) struct Shared {
    pub(crate) commands: Sender<Command>,
    pub(crate) waker: Waker,
    /// The I/O thread is (about to be) blocked in `poll`: a command must wake it.
    pub(crate) parked: AtomicBool,
    /// Data frames and bytes per peer, by rank.
    pub(crate) stats: Mutex<Vec<PeerStats>>,
    /// Where senders may write frames for each rank themselves, by rank.
    pub(crate) routes: RwLock<Vec<Mutex<Route>>>,
    pub(crate) max_queued_bytes: usize,
    /// Whether the I/O thread may poll now (see [`PollGate`]); always, if unset.
    pub(crate) poll_gate: OnceLock<PollGate>,
}

/// How a sender reaches one peer.
#[derive(Default)]
pub(crate) struct Route {
    /// The connection this rank's frames to the peer go on, once the I/O thread
    /// has handed it out.
    via: Option<Arc<Outlet>>,
    /// Frames for the peer handed to the I/O thread and not yet sent by it: while
    /// any are, later frames follow them through the I/O thread (order).
    in_flight: u32,
    /// Their bytes: they count against `max_queued_bytes` like queued ones, so a
    /// sender faster than the I/O thread cannot grow memory without bound either.
    in_flight_bytes: usize,
    /// The I/O thread was told the bound was passed: later frames are dropped.
    overflowed: bool,
}

impl Shared {
    /// Sends a data frame: straight to the socket when the peer's connection is
    /// up and nothing waits before the frame, else through the I/O thread.
    pub(crate) fn send(&self, to: u32, frame: Vec<u8>) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(route) = routes.get(to as usize) {
            let mut route = route.lock().unwrap_or_else(|p| p.into_inner());
            if route.in_flight == 0 {
                if let Some(outlet) = &route.via {
                    match outlet.send(Kind::Data, &frame, Instant::now()) {
                        Ok(queued) => {
                            count_sent(&self.stats, to, frame.len());
                            if queued > self.max_queued_bytes {
                                drop(route);
                                drop(routes);
                                self.command(Command::Overflow { to, queued });
                            }
                        }
                        // The I/O thread sees the failure on the socket and
                        // reports the peer; the frame is lost with the link.
                        Err(err) => {
                            tracing::debug!(to, %err, "herald-tcp: sending failed");
                        }
                    }
                    return;
                }
            }
            if route.overflowed {
                return;
            }
            let pending = route.in_flight_bytes + frame.len();
            if pending > self.max_queued_bytes {
                route.overflowed = true;
                drop(route);
                drop(routes);
                return self.command(Command::Overflow {
                    to,
                    queued: pending,
                });
            }
            route.in_flight += 1;
            route.in_flight_bytes = pending;
        }
        drop(routes);
        self.command(Command::Send { to, frame });
    }

    /// Whether the owner lets the I/O thread poll now.
    fn may_poll(&self) -> bool {
        self.poll_gate.get().is_none_or(|gate| gate())
    }

    /// Hands a command to the I/O thread, waking it only if it sleeps.
    pub(crate) fn command(&self, command: Command) {
        if self.commands.send(command).is_err() {
            return;
        }
        if self.parked.swap(false, Ordering::SeqCst) {
            if let Err(err) = self.waker.wake() {
                tracing::warn!(%err, "herald-tcp: cannot wake the I/O thread");
            }
        }
    }
}

/// What the handle asks of the I/O thread.
pub(crate) enum Command {
    Send {
        to: u32,
        frame: Vec<u8>,
    },
    /// A sender found more than `max_queued_bytes` queued for `to`.
    Overflow {
        to: u32,
        queued: usize,
    },
    Close {
        to: u32,
    },
    Shutdown,
}

/// How formation ended, for [`Mesh::establish`](crate::Mesh::establish).
pub(crate) struct Formed {
    pub(crate) rank: u32,
    pub(crate) size: u32,
}

/// Settings the loop runs with.
pub(crate) struct Settings {
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) peer_timeout: Duration,
    pub(crate) establish_timeout: Duration,
    pub(crate) spin: Duration,
    pub(crate) coordinator: SocketAddr,
    /// Join a running job through `coordinator` instead of forming one.
    pub(crate) join: bool,
}

/// The I/O thread's state.
pub(crate) struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    me: Identity,
    settings: Settings,
    conns: Vec<Option<Slot>>,
    free: Vec<usize>,
    peers: Vec<Peer>,
    /// Accepted connections that have not proved the secret, oldest first.
    strangers: VecDeque<usize>,
    formation: Formation,
    formed: Option<Sender<Result<Formed, TcpError>>>,
    events: EventSender,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
    refusals: Refusals,
    /// Set once shutting down: the loop ends when every connection is closed or then.
    closing_until: Option<Instant>,
    accept_again_at: Option<Instant>,
    /// The earliest time a timer may be due.
    next_timer: Instant,
    /// When formation (or joining) fails if not done.
    formation_deadline: Instant,
    /// Where connections read into: one buffer for all, allocated once.
    read_buffer: Box<[u8]>,
    /// Rank 0: joiners admitted, reported to the owner in rank order.
    joins: JoinOrder,
    /// Connections that had more to read when their turn ended (see
    /// [`READS_PER_TURN`](crate::conn::READS_PER_TURN)): read again next turn.
    unread: Vec<usize>,
    /// Connections whose records are being handled, innermost last (handling
    /// one may lose a peer, which drains the others).
    delivering: Vec<usize>,
}

/// A connection and the part of its handshake still to run.
struct Slot {
    conn: Conn,
    handshake: Option<Handshake>,
    /// It has carried a frame or control message, or we chose it to send on:
    /// from then on its loss is the peer's.
    in_use: bool,
    /// Closing (the peer is retired or we shut down): reads are discarded, and
    /// the slot goes once written out and closed by the peer, or at this time.
    closing: Option<Instant>,
    /// The peer closed its side (seen while closing ours).
    peer_closed: bool,
}

impl Slot {
    /// One turn of reads (see [`Conn::on_readable`]): true if more may be left.
    fn read_turn(
        &mut self,
        me: &Identity,
        max_record: usize,
        now: Instant,
        buffer: &mut [u8],
        received: &mut Vec<Received>,
    ) -> Result<bool, ConnError> {
        self.conn
            .on_readable(&mut self.handshake, me, max_record, now, buffer, received)
    }
}

/// What this rank knows of another rank.
#[derive(Default)]
struct Peer {
    addr: Option<SocketAddr>,
    /// Connections with this peer (either direction) that passed the hellos,
    /// plus the one being dialled.
    conns: Vec<usize>,
    /// The connection this rank's frames to the peer go on, once chosen.
    send_via: Option<usize>,
    dial: Option<Dial>,
    /// Records waiting for the connection to come up.
    waiting: VecDeque<(Kind, Vec<u8>)>,
    waiting_bytes: usize,
    state: PeerState,
    /// Asked rank 0 where it listens (it joined after the table).
    looked_up: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    #[default]
    Live,
    /// Reported down for silence: frames still go to it until it is retired or
    /// until this time, so that a peer that was only stopped can learn its fate.
    Reported { close_at: Instant },
    /// The owner closed the link: what was queued goes, nothing is reported.
    Retired,
    /// Gone: frames to it are dropped.
    Down,
}

/// Attempts to reach a peer.
struct Dial {
    /// The connection of the attempt under way, if one is.
    conn: Option<usize>,
    retry_at: Option<Instant>,
    pause: Duration,
    deadline: Instant,
    attempts: u32,
    last_error: String,
}

enum Formation {
    /// Rank 0: the listen address of each rank, as they register.
    Coordinator {
        addrs: Vec<Option<SocketAddr>>,
    },
    /// Another rank: waiting for rank 0's table.
    Member,
    /// A process joining a running job: waiting for rank 0's admission.
    Joining,
    Formed,
    Failed,
}

impl Reactor {
    /// Sets up the loop around `listener`; formation starts when [`Reactor::run`] does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        listener: std::net::TcpListener,
        me: Identity,
        settings: Settings,
        events: EventSender,
        formed: Sender<Result<Formed, TcpError>>,
    ) -> io::Result<(Reactor, Arc<Shared>)> {
        raise_descriptor_limit();
        listener.set_nonblocking(true)?;
        widen_backlog(&listener);
        let local_addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (commands_tx, commands) = crossbeam_channel::unbounded();
        let size = if settings.join { 0 } else { me.size as usize };
        let shared = Arc::new(Shared {
            commands: commands_tx,
            waker,
            parked: AtomicBool::new(false),
            stats: Mutex::new(Vec::new()),
            routes: RwLock::new((0..size).map(|_| Mutex::default()).collect()),
            max_queued_bytes: settings.max_queued_bytes,
            poll_gate: OnceLock::new(),
        });
        let formation = if settings.join {
            Formation::Joining
        } else if me.rank == 0 {
            Formation::Coordinator {
                addrs: (0..size).map(|r| (r == 0).then_some(local_addr)).collect(),
            }
        } else {
            Formation::Member
        };
        let refusals = Refusals::new(me.rank, &me.cluster_id);
        let now = Instant::now();
        let settings_deadline = settings.establish_timeout;
        let reactor = Reactor {
            poll,
            listener: Some(listener),
            local_addr,
            me,
            settings,
            conns: Vec::new(),
            free: Vec::new(),
            peers: (0..size).map(|_| Peer::default()).collect(),
            strangers: VecDeque::new(),
            formation,
            formed: Some(formed),
            events,
            commands,
            shared: Arc::clone(&shared),
            refusals,
            closing_until: None,
            accept_again_at: None,
            next_timer: now,
            formation_deadline: now + settings_deadline,
            read_buffer: vec![0; READ_CHUNK].into_boxed_slice(),
            joins: JoinOrder::new(size as u32),
            unread: Vec::new(),
            delivering: Vec::new(),
        };
        Ok((reactor, shared))
    }

    /// Runs formation, then the job's traffic, until shut down.
    pub(crate) fn run(mut self) {
        let started = Instant::now();
        self.start_formation(started);
        let mut events = Events::with_capacity(1024);
        let mut last_busy = started;
        let mut last_woke = started;
        loop {
            let now = Instant::now();
            let spinning =
                now.duration_since(last_busy) < self.settings.spin && self.shared.may_poll();
            let timeout = if spinning {
                // Polling, but a thread that has work gets the core first.
                std::thread::yield_now();
                Duration::ZERO
            } else {
                self.shared.parked.store(true, Ordering::SeqCst);
                if self.commands.is_empty() && self.unread.is_empty() {
                    self.next_timer.saturating_duration_since(now)
                } else {
                    Duration::ZERO
                }
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(%err, "herald-tcp: the I/O loop failed");
                    self.fail_formation(TcpError::Io {
                        context: "polling sockets".into(),
                        source: err,
                    });
                    break;
                }
            }
            self.shared.parked.store(false, Ordering::SeqCst);
            let now = Instant::now();
            self.forgive_own_pause(now, last_woke);
            last_woke = now;
            let mut busy = false;
            // Commands first: one given before a frame arrived (close_peer) applies
            // to it. A bounded batch, so a burst of sends cannot starve the sockets.
            for _ in 0..COMMAND_BATCH {
                let Ok(command) = self.commands.try_recv() else {
                    break;
                };
                busy = true;
                self.on_command(command, now);
            }
            for event in events.iter() {
                busy = true;
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    Token(token) => self.on_conn_event(
                        token - FIRST_CONN,
                        Ready {
                            readable: event.is_readable()
                                || event.is_read_closed()
                                || event.is_error(),
                            writable: event.is_writable() || event.is_error(),
                            closed: event.is_read_closed() || event.is_error(),
                        },
                        now,
                    ),
                }
            }
            for index in std::mem::take(&mut self.unread) {
                busy = true;
                self.on_conn_event(index, Ready::READ_ON, now);
            }
            if now >= self.next_timer {
                self.on_timers(now);
            }
            if busy {
                last_busy = now;
            }
            if self.finished(now) {
                break;
            }
        }
        self.refusals.finish(Instant::now());
        tracing::debug!(rank = self.me.rank, "herald-tcp: I/O thread ends");
    }

    // ---- formation -------------------------------------------------------

    fn start_formation(&mut self, now: Instant) {
        self.formation_deadline = now + self.settings.establish_timeout;
        self.next_timer = self.formation_deadline;
        match self.formation {
            Formation::Coordinator { .. } => self.maybe_formed(now),
            Formation::Member => {
                self.peers[0].addr = Some(self.settings.coordinator);
                self.start_dial(0, now + self.settings.establish_timeout, now);
            }
            Formation::Joining => {
                self.peers.push(Peer {
                    addr: Some(self.settings.coordinator),
                    ..Peer::default()
                });
                self.start_dial(0, now + self.settings.establish_timeout, now);
            }
            Formation::Formed | Formation::Failed => {}
        }
    }

    /// Rank 0: once every rank registered, sends each the table.
    fn maybe_formed(&mut self, now: Instant) {
        let Formation::Coordinator { addrs } = &self.formation else {
            return;
        };
        if addrs.iter().any(Option::is_none) {
            return;
        }
        let addrs: Vec<SocketAddr> = addrs.iter().flatten().copied().collect();
        let table = Control::Table {
            addrs: addrs.clone(),
        }
        .encode();
        for (rank, addr) in addrs.iter().enumerate().skip(1) {
            self.peers[rank].addr = Some(*addr);
            self.send_control(rank as u32, &table, now);
        }
        self.formed(now);
    }

    fn formed(&mut self, now: Instant) {
        self.formation = Formation::Formed;
        tracing::debug!(rank = self.me.rank, size = self.me.size, addr = %self.local_addr, "herald-tcp: formed");
        if let Some(formed) = self.formed.take() {
            let _ = formed.send(Ok(Formed {
                rank: self.me.rank,
                size: self.me.size,
            }));
        }
        self.next_timer = now;
    }

    /// Formation failed here: say why to the caller and (rank 0) to every rank,
    /// then close everything.
    fn fail_formation(&mut self, error: TcpError) {
        let now = Instant::now();
        if matches!(self.formation, Formation::Coordinator { .. }) {
            let abort = Control::Abort {
                reason: error.to_string(),
            }
            .encode();
            for rank in 1..self.peers.len() as u32 {
                self.send_control(rank, &abort, now);
            }
        }
        self.formation = Formation::Failed;
        if let Some(formed) = self.formed.take() {
            let _ = formed.send(Err(error));
        }
        self.begin_shutdown(now);
    }

    fn forming(&self) -> bool {
        matches!(
            self.formation,
            Formation::Coordinator { .. } | Formation::Member | Formation::Joining
        )
    }

    // ---- commands --------------------------------------------------------

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Send { to, frame } => {
                let len = frame.len();
                self.with_route(to, |route| {
                    route.in_flight = route.in_flight.saturating_sub(1);
                    route.in_flight_bytes = route.in_flight_bytes.saturating_sub(len);
                });
                self.send_frame(to, frame, now);
                self.publish_route(to);
            }
            Command::Overflow { to, queued } => self.check_queue(to, queued, now),
            Command::Close { to } => self.retire(to, now),
            Command::Shutdown => self.begin_shutdown(now),
        }
    }

    fn send_frame(&mut self, to: u32, frame: Vec<u8>, now: Instant) {
        self.transmit(to, Kind::Data, frame, now);
    }

    /// Sends a record to `to` on its connection, making one if there is none.
    fn transmit(&mut self, to: u32, kind: Kind, payload: Vec<u8>, now: Instant) {
        // A rank that joined after our table: rank 0 will say where it is.
        self.learn_rank(to);
        let Some(peer) = self.peers.get_mut(to as usize) else {
            tracing::warn!(
                to,
                size = self.peers.len(),
                "herald-tcp: frame to a rank outside the job dropped"
            );
            return;
        };
        if matches!(peer.state, PeerState::Down | PeerState::Retired) || to == self.me.rank {
            return;
        }
        if peer.send_via.is_none() && peer.dial.is_none() {
            // A connection the peer opened carries our frames too.
            let conns = &self.conns;
            peer.send_via = peer.conns.iter().copied().find(|&c| {
                conns[c]
                    .as_ref()
                    .is_some_and(|s| s.conn.is_open() && s.closing.is_none())
            });
        }
        let Some(conn) = peer.send_via else {
            peer.waiting_bytes += payload.len();
            peer.waiting.push_back((kind, payload));
            let queued = peer.waiting_bytes;
            if peer.dial.is_none() {
                let deadline = now + self.dial_patience();
                self.start_dial(to, deadline, now);
            }
            return self.check_queue(to, queued, now);
        };
        let Some(slot) = self.conns[conn].as_mut() else {
            return;
        };
        slot.in_use = true;
        let sent = slot.conn.outlet.send(kind, &payload, now);
        if kind == Kind::Data {
            count_sent(&self.shared.stats, to, payload.len());
        }
        match sent {
            Ok(queued) => self.check_queue(to, queued, now),
            Err(err) => self.conn_failed(conn, ConnError::Io(err), now),
        }
    }

    /// Makes room for `rank` if it is above the ranks this one knows: one that
    /// joined after the table (rank 0, which admits joiners, knows them all).
    /// Bounded, so a stray rank number cannot grow the table without end.
    fn learn_rank(&mut self, rank: u32) {
        let known = self.peers.len();
        let rank = rank as usize;
        if rank >= known && self.me.rank != 0 && rank < known + MAX_UNKNOWN_RANKS {
            self.peers.resize_with(rank + 1, Peer::default);
        }
    }

    /// A peer whose queue outgrew the bound is too slow to keep: it is lost.
    fn check_queue(&mut self, to: u32, queued: usize, now: Instant) {
        if queued > self.settings.max_queued_bytes {
            let reason = format!(
                "rank {to} does not take frames fast enough: {queued} bytes are queued for it, \
                 above the limit of {} (max_queued_bytes)",
                self.settings.max_queued_bytes
            );
            self.peer_lost(to, reason, false, now);
        }
    }

    /// Sends a control message on an existing connection with `to`, if any.
    fn send_control(&mut self, to: u32, payload: &[u8], now: Instant) {
        let Some(conn) = self.peers.get(to as usize).and_then(|p| {
            p.send_via
                .or_else(|| p.conns.iter().copied().find(|&c| self.is_open(c)))
        }) else {
            return;
        };
        if let Some(slot) = self.conns[conn].as_ref() {
            if let Err(err) = slot.conn.outlet.send(Kind::Control, payload, now) {
                self.conn_failed(conn, ConnError::Io(err), now);
            }
        }
    }

    /// Closes the link to `to` for good once what is queued for it is written.
    fn retire(&mut self, to: u32, now: Instant) {
        let Some(peer) = self.peers.get_mut(to as usize) else {
            return;
        };
        if matches!(peer.state, PeerState::Down | PeerState::Retired) {
            return;
        }
        peer.state = PeerState::Retired;
        self.unpublish_route(to);
        let Some(peer) = self.peers.get_mut(to as usize) else {
            return;
        };
        if peer.dial.is_some() && !peer.waiting.is_empty() {
            // The queued frames may tell it why; they go once the dial succeeds.
            return;
        }
        peer.waiting.clear();
        peer.waiting_bytes = 0;
        peer.dial = None;
        self.close_retired(to, now);
    }

    /// Closes the connections of `rank`, retired, once what is queued is written:
    /// the one its frames go on first, the others only once that one is gone
    /// (`rank` read it to its end and closed it, or the linger ended). The end
    /// of another, seen first, would look to `rank` like this rank's loss while
    /// the news that it was declared down still waits behind frames on the first.
    fn close_retired(&mut self, rank: u32, now: Instant) {
        let Some(peer) = self.peers.get(rank as usize) else {
            return;
        };
        if let Some(via) = peer.send_via.filter(|&c| self.conns[c].is_some()) {
            return self.close_conn_gently(via, now);
        }
        for conn in peer.conns.clone() {
            let open = self.conns[conn]
                .as_ref()
                .is_some_and(|s| s.closing.is_none());
            if open {
                self.close_conn_gently(conn, now);
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.closing_until.is_some() {
            return;
        }
        self.closing_until = Some(now + CLOSE_LINGER);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for rank in 0..self.peers.len() as u32 {
            self.retire(rank, now);
        }
        // The rest of each rank's links close too (the end of the job carries no
        // news); strangers and dials in progress are simply dropped.
        for index in 0..self.conns.len() {
            let Some(slot) = self.conns[index].as_ref() else {
                continue;
            };
            if slot.closing.is_some() {
                continue;
            }
            if slot.conn.rank.is_some() && slot.conn.is_authenticated() {
                self.close_conn_gently(index, now);
            } else {
                self.drop_conn(index);
            }
        }
        self.next_timer = now;
    }

    fn finished(&mut self, now: Instant) -> bool {
        let Some(until) = self.closing_until else {
            return false;
        };
        now >= until || self.conns.iter().all(Option::is_none)
    }

    // ---- connections ----------------------------------------------------

    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    if self.strangers.len() >= MAX_UNAUTHENTICATED {
                        // Forget those that proved themselves or left, then make room.
                        let conns = &self.conns;
                        self.strangers.retain(|&i| {
                            conns[i].as_ref().is_some_and(|s| {
                                !s.conn.is_authenticated() && s.conn.rank.is_none()
                            })
                        });
                    }
                    if self.strangers.len() >= MAX_UNAUTHENTICATED {
                        self.evict_oldest_stranger(now);
                    }
                    let handshake = match Handshake::acceptor(&self.me.secret) {
                        Ok(handshake) => handshake,
                        Err(err) => {
                            self.refusals.note(from, &err.to_string(), now);
                            continue;
                        }
                    };
                    let conn = Conn::accepted(stream, from, now);
                    if let Some(index) = self.insert(conn, Some(handshake), now) {
                        self.strangers.push_back(index);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // Out of descriptors, most likely: the backlog keeps the rest
                    // until the timer tries again.
                    tracing::warn!(%err, "herald-tcp: accept failed; retrying shortly");
                    self.accept_again_at = Some(now + ACCEPT_BACKOFF);
                    self.next_timer = self.next_timer.min(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn evict_oldest_stranger(&mut self, now: Instant) {
        while let Some(index) = self.strangers.pop_front() {
            let Some(slot) = self.conns[index].as_ref() else {
                continue;
            };
            if slot.conn.is_authenticated() || slot.conn.rank.is_some() {
                continue;
            }
            let from = slot.conn.remote;
            self.drop_conn(index);
            self.refusals.note(
                from,
                "evicted: too many connections waiting to prove the secret",
                now,
            );
            return;
        }
    }

    fn insert(&mut self, conn: Conn, handshake: Option<Handshake>, now: Instant) -> Option<usize> {
        let index = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let fd = conn.outlet.stream.as_raw_fd();
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(index + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(err) = registered {
            tracing::warn!(%err, "herald-tcp: cannot watch a connection; closing it");
            self.free.push(index);
            return None;
        }
        self.conns[index] = Some(Slot {
            conn,
            handshake,
            in_use: false,
            closing: None,
            peer_closed: false,
        });
        self.next_timer = self.next_timer.min(now + UNAUTHENTICATED_DEADLINE);
        Some(index)
    }

    fn drop_conn(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index).and_then(Option::take) {
            let fd = slot.conn.outlet.stream.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            // Senders may still hold the outlet for a moment: close the socket now.
            let _ = slot.conn.outlet.stream.shutdown(std::net::Shutdown::Both);
            self.free.push(index);
            if let Some(rank) = slot.conn.rank {
                let was_route = self
                    .peers
                    .get(rank as usize)
                    .is_some_and(|p| p.send_via == Some(index));
                if was_route {
                    self.unpublish_route(rank);
                }
                if let Some(peer) = self.peers.get_mut(rank as usize) {
                    peer.conns.retain(|&c| c != index);
                    if peer.send_via == Some(index) {
                        peer.send_via = None;
                    }
                    if let Some(dial) = peer.dial.as_mut() {
                        if dial.conn == Some(index) {
                            dial.conn = None;
                        }
                    }
                }
                let retired = self
                    .peers
                    .get(rank as usize)
                    .is_some_and(|p| p.state == PeerState::Retired);
                if was_route && retired {
                    // What it carried is written or given up on: the others go now.
                    self.close_retired(rank, Instant::now());
                }
            }
        }
    }

    /// Writes out what is queued on `index`, half-closes it, and lets it go once
    /// the peer closes too (or the linger ends).
    fn close_conn_gently(&mut self, index: usize, now: Instant) {
        let Some(slot) = self.conns[index].as_mut() else {
            return;
        };
        if slot.conn.is_connecting() || !slot.conn.is_authenticated() {
            self.drop_conn(index);
            return;
        }
        slot.closing = Some(now + CLOSE_LINGER);
        slot.conn.outlet.shut_when_flushed(now);
        self.next_timer = self.next_timer.min(now + CLOSE_LINGER);
    }

    fn is_open(&self, index: usize) -> bool {
        self.conns[index]
            .as_ref()
            .is_some_and(|s| s.conn.is_open() && s.closing.is_none())
    }

    fn on_conn_event(&mut self, index: usize, ready: Ready, now: Instant) {
        let mut received = Vec::new();
        let max_record = self.max_record();
        let result = {
            let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                return;
            };
            let mut result = Ok(());
            if ready.writable {
                result = slot.conn.on_writable(&mut slot.handshake, &self.me, now);
            }
            // A failed write does not stop the read: what the peer sent before
            // it closed (the news that this rank was declared down) comes first.
            if ready.readable {
                // The close came with the last data when the event says so: a
                // short read stops before it, and no later event will tell of it.
                let passes = if ready.closed { 2 } else { 1 };
                let mut read = Ok(false);
                for _ in 0..passes {
                    read = slot.read_turn(
                        &self.me,
                        max_record,
                        now,
                        &mut self.read_buffer,
                        &mut received,
                    );
                    if !matches!(read, Ok(false)) {
                        break;
                    }
                }
                if let Ok(true) = read {
                    self.unread.push(index);
                }
                if result.is_ok() {
                    result = read.map(|_| ());
                }
            }
            if slot.closing.is_some() {
                // A closing connection: nothing it says matters any more.
                received.clear();
                if let Err(ConnError::Closed { .. }) = result {
                    slot.peer_closed = true;
                    result = Ok(());
                }
                if slot.peer_closed && slot.conn.outlet.is_drained() {
                    self.drop_conn(index);
                    return;
                }
                // Any other failure: the slot goes like a failed one, quietly.
                if result.is_err() {
                    self.drop_conn(index);
                    return;
                }
            }
            result
        };
        self.deliver(index, received, now);
        if let Err(err) = result {
            self.conn_failed(index, err, now);
        }
    }

    fn on_received(&mut self, index: usize, item: Received, now: Instant) {
        match item {
            Received::Hello(hello) => self.on_hello(index, hello, now),
            Received::Control(control) => {
                if let Some(slot) = self.conns[index].as_mut() {
                    slot.in_use = true;
                }
                self.on_control(index, control, now);
            }
            Received::Data(bytes) => self.on_data(index, bytes, now),
        }
    }

    fn on_hello(&mut self, index: usize, hello: Hello, now: Instant) {
        let Some(slot) = self.conns[index].as_ref() else {
            return;
        };
        let mut expect = slot.conn.expect;
        let remote = slot.conn.remote;
        if expect == Expect::AnyOther && hello.rank == JOINING {
            expect = Expect::Joiner;
        }
        match self.me.check(&hello, expect) {
            Ok(()) => {}
            Err(err) => return self.hello_refused(index, hello.rank, err, now),
        }
        match expect {
            Expect::Rank(rank) => {
                if let Some(slot) = self.conns[index].as_mut() {
                    slot.conn.accept_hello(rank);
                }
                self.dial_succeeded(rank, index, now);
            }
            Expect::AnyOther | Expect::Joiner => {
                let rank = hello.rank;
                if expect == Expect::Joiner {
                    return self.accept_joiner(index, now);
                }
                if !self.forming() {
                    // A rank that joined after our table (rank 0 admitted it).
                    self.learn_rank(rank);
                }
                let Some(peer) = self.peers.get_mut(rank as usize) else {
                    return self.hello_refused(
                        index,
                        rank,
                        HandshakeError::UnexpectedRank {
                            expected: format!("a rank below {}", self.peers.len()),
                            found: rank,
                        },
                        now,
                    );
                };
                if peer.state == PeerState::Retired && !peer.waiting.is_empty() {
                    // Frames wait for a rank we retired (the news that it was
                    // declared down): its own connection brings them faster than
                    // our dial, which may never get through. Closing it unread
                    // would look like our loss to it.
                    return self.deliver_then_close(rank, index, now);
                }
                if matches!(peer.state, PeerState::Down | PeerState::Retired) {
                    tracing::debug!(
                        rank,
                        "herald-tcp: connection from a rank that is gone, closed"
                    );
                    self.drop_conn(index);
                    return;
                }
                if let Formation::Coordinator { addrs } = &self.formation {
                    if addrs[rank as usize].is_some() || !peer.conns.is_empty() {
                        let first = peer
                            .conns
                            .first()
                            .and_then(|&c| self.conns[c].as_ref())
                            .map_or(remote, |s| s.conn.remote);
                        return self.fail_formation(TcpError::DuplicateRank {
                            rank,
                            first,
                            second: remote,
                        });
                    }
                }
                // Frames waiting for our own dial stay with it: one connection
                // per direction keeps them in order.
                peer.conns.push(index);
                if let Some(slot) = self.conns[index].as_mut() {
                    slot.conn.accept_hello(rank);
                }
            }
        }
    }

    /// A retired rank dialled us while frames for it wait: they go on its
    /// connection (instead of our dial), then the link closes.
    fn deliver_then_close(&mut self, rank: u32, index: usize, now: Instant) {
        let dialling = self.peers[rank as usize]
            .dial
            .take()
            .and_then(|dial| dial.conn);
        if let Some(dial) = dialling {
            self.drop_conn(dial);
        }
        let peer = &mut self.peers[rank as usize];
        peer.conns.push(index);
        peer.send_via = Some(index);
        if let Some(slot) = self.conns[index].as_mut() {
            slot.conn.accept_hello(rank);
            slot.in_use = true;
        }
        self.flush_waiting(rank, now);
        self.close_conn_gently(index, now);
    }

    /// A peer that proved the secret presented a hello we cannot accept.
    fn hello_refused(&mut self, index: usize, rank: u32, err: HandshakeError, now: Instant) {
        let Some(slot) = self.conns[index].as_ref() else {
            return;
        };
        let remote = slot.conn.remote;
        let expect = slot.conn.expect;
        self.drop_conn(index);
        let disagreement = matches!(err, HandshakeError::Disagreement(_));
        match expect {
            Expect::Rank(dialled) if self.forming() => self.fail_formation(TcpError::Handshake {
                rank: dialled,
                addr: remote,
                reason: err,
            }),
            Expect::Rank(dialled) => {
                let reason = format!("rank {dialled} at {remote} refused: {err}");
                self.peer_lost(dialled, reason, false, now);
            }
            // A rank of this job with other settings: the job cannot work.
            _ if disagreement && self.forming() => self.fail_formation(TcpError::Handshake {
                rank,
                addr: remote,
                reason: err,
            }),
            _ => self.refusals.note(remote, &err.to_string(), now),
        }
    }

    fn on_control(&mut self, index: usize, control: Control, now: Instant) {
        let Some(rank) = self.conns[index].as_ref().and_then(|s| s.conn.rank) else {
            return;
        };
        match control {
            Control::Register { listen } => match &mut self.formation {
                Formation::Coordinator { addrs } => {
                    if let Some(slot) = addrs.get_mut(rank as usize) {
                        *slot = Some(listen);
                    }
                    self.maybe_formed(now);
                }
                Formation::Formed if self.me.rank == 0 => self.joiner_registered(rank, listen, now),
                _ => {}
            },
            Control::Table { addrs } if rank == 0 => {
                if !matches!(self.formation, Formation::Member) {
                    return;
                }
                if addrs.len() != self.me.size as usize {
                    return self.fail_formation(TcpError::Formation {
                        reason: format!(
                            "rank 0 sent a table of {} addresses for a job of {}",
                            addrs.len(),
                            self.me.size
                        ),
                    });
                }
                for (peer, addr) in self.peers.iter_mut().zip(addrs) {
                    peer.addr.get_or_insert(addr);
                }
                self.formed(now);
            }
            Control::Abort { reason } if rank == 0 && self.forming() => {
                self.fail_formation(TcpError::Aborted { reason });
            }
            Control::Lookup { rank: wanted } if self.me.rank == 0 => {
                let addr = self.peers.get(wanted as usize).and_then(|p| {
                    (p.state == PeerState::Live)
                        .then_some(p.addr)
                        .flatten()
                        .or((wanted == 0).then_some(self.local_addr))
                });
                let answer = Control::Address { rank: wanted, addr }.encode();
                self.send_control(rank, &answer, now);
            }
            Control::Address { rank: wanted, addr } if rank == 0 => {
                self.on_address(wanted, addr, now)
            }
            Control::Admit { rank: mine } if rank == 0 => self.on_admitted(mine, now),
            other => {
                tracing::debug!(
                    from = rank,
                    ?other,
                    "herald-tcp: unexpected control message ignored"
                );
            }
        }
    }

    fn on_data(&mut self, index: usize, bytes: Vec<u8>, now: Instant) {
        let Some(slot) = self.conns[index].as_mut() else {
            return;
        };
        let Some(rank) = slot.conn.rank else {
            return;
        };
        slot.in_use = true;
        if bytes.len() > self.settings.max_frame_bytes {
            let reason = format!(
                "rank {rank} sent a frame of {} bytes, above the limit of {} (max_frame_bytes)",
                bytes.len(),
                self.settings.max_frame_bytes
            );
            tracing::warn!(peer = rank, "herald-tcp: {reason}");
            return self.peer_lost(rank, reason, false, now);
        }
        let live = self
            .peers
            .get(rank as usize)
            .is_some_and(|p| p.state == PeerState::Live);
        if live {
            if let Ok(mut stats) = self.shared.stats.lock() {
                let entry = stats_entry(&mut stats, rank);
                entry.frames_received += 1;
                entry.bytes_received += bytes.len() as u64;
            }
            // A dropped receiver means nobody listens any more; keep draining.
            self.events.send(MeshEvent::Frame { from: rank, bytes });
        }
    }

    /// A connection failed or closed.
    fn conn_failed(&mut self, index: usize, err: ConnError, now: Instant) {
        if matches!(err, ConnError::Io(_)) {
            // A write failed: deliver what the peer sent before it went (it may
            // be the news that this rank was declared down), then let it go.
            // How the read ends does not matter: the connection is lost anyway.
            let _ = self.drain(index, now);
        }
        let Some(slot) = self.conns[index].as_ref() else {
            return;
        };
        let remote = slot.conn.remote;
        let in_use = slot.in_use;
        let authenticated = slot.conn.is_open();
        let expect = slot.conn.expect;
        let rank = slot.conn.rank;
        self.drop_conn(index);
        match (expect, rank) {
            // Our own attempt to reach a rank that did not get through.
            (Expect::Rank(rank), _) if !authenticated => self.dial_failed(rank, err, now),
            (_, Some(rank)) if in_use => {
                let clean = matches!(err, ConnError::Closed { partial: None });
                let reason = format!("rank {rank} {err}");
                let reason = match err {
                    ConnError::Io(_) | ConnError::Protocol(_) | ConnError::Handshake(_) => {
                        format!("the link to rank {rank} failed: {err}")
                    }
                    ConnError::Closed { .. } => reason,
                };
                self.peer_lost(rank, reason, clean, now);
            }
            // Authenticated but never used: whoever opened it gave up on it.
            (_, Some(_)) => {}
            (_, None) => self.refusals.note(remote, &err.to_string(), now),
        }
    }

    /// Reads and handles what `index` has received, up to [`DRAIN_TURNS`] turns
    /// of reads; returns how the reading ended if it failed.
    fn drain(&mut self, index: usize, now: Instant) -> Option<ConnError> {
        let max_record = self.max_record();
        let mut received = Vec::new();
        let mut ended = Ok(false);
        {
            if self.delivering.contains(&index) {
                // What it read before is still being handled: reading on now
                // would hand later records out first. Once its peer is lost,
                // the rest of what it read goes unhandled, as after any loss.
                return None;
            }
            let slot = self.conns.get_mut(index).and_then(Option::as_mut)?;
            if !slot.conn.is_authenticated() || slot.closing.is_some() {
                return None;
            }
            for _ in 0..DRAIN_TURNS {
                ended = slot.read_turn(
                    &self.me,
                    max_record,
                    now,
                    &mut self.read_buffer,
                    &mut received,
                );
                if !matches!(ended, Ok(true)) {
                    break;
                }
            }
        }
        self.deliver(index, received, now);
        match ended {
            Ok(true) => {
                self.unread.push(index);
                None
            }
            Ok(false) => None,
            Err(err) => Some(err),
        }
    }

    /// Before `rank` is reported lost: reads and handles what its other
    /// connections have already received, and those whose hello has not been
    /// read yet (any may be its). Two ranks may hold a connection each way, and
    /// a rank that retires a peer sends the news that it was declared down on
    /// one and closes both: the fenced rank may see the other fail first (a
    /// write, or the end of its stream), and must still hear the news before it
    /// reports the innocent sender lost.
    fn drain_peer(&mut self, rank: u32, now: Instant) {
        let candidates: Vec<usize> = (0..self.conns.len())
            .filter(|&i| {
                self.conns[i].as_ref().is_some_and(|s| {
                    s.closing.is_none()
                        && s.conn.is_authenticated()
                        && s.conn.rank.is_none_or(|r| r == rank)
                })
            })
            .collect();
        for index in candidates {
            let Some(err) = self.drain(index, now) else {
                continue;
            };
            // One that turned out to be another rank's fails as it would have
            // when its own turn came; the lost rank's go with it below.
            let other = self.conns[index]
                .as_ref()
                .is_some_and(|s| s.conn.rank != Some(rank));
            if other {
                self.conn_failed(index, err, now);
            }
        }
    }

    /// Largest record a connection accepts: the frame limit, or more for control
    /// messages (address tables), plus the record's overhead.
    fn max_record(&self) -> usize {
        self.settings.max_frame_bytes.max(CONTROL_LIMIT) + RECORD_OVERHEAD
    }

    /// Handles what `index` received, in order, until the connection goes.
    fn deliver(&mut self, index: usize, received: Vec<Received>, now: Instant) {
        self.delivering.push(index);
        for item in received {
            if self.conns[index].is_none() {
                break;
            }
            self.on_received(index, item, now);
        }
        self.delivering.pop();
    }

    /// The peer is gone: deliver what it sent before it went, close everything
    /// with it and report it once.
    fn peer_lost(&mut self, rank: u32, reason: String, clean: bool, now: Instant) {
        let live = self
            .peers
            .get(rank as usize)
            .is_some_and(|p| p.state == PeerState::Live);
        if live && self.closing_until.is_none() {
            self.drain_peer(rank, now);
        }
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        // Read after draining: what it delivered may have reported the peer already.
        let state = peer.state;
        peer.state = PeerState::Down;
        peer.dial = None;
        peer.waiting.clear();
        peer.waiting_bytes = 0;
        for conn in peer.conns.clone() {
            self.drop_conn(conn);
        }
        if state != PeerState::Live {
            return;
        }
        if self.forming() {
            let error = if rank == 0 {
                TcpError::Formation {
                    reason: format!("the link to rank 0 failed during formation: {reason}"),
                }
            } else {
                TcpError::Formation {
                    reason: format!("rank {rank} was lost during formation: {reason}"),
                }
            };
            return self.fail_formation(error);
        }
        if self.closing_until.is_some() {
            return;
        }
        if clean {
            tracing::debug!(peer = rank, %reason, "herald-tcp: rank {rank} closed its link");
        } else {
            tracing::warn!(peer = rank, %reason, "herald-tcp: link to rank {rank} lost");
        }
        self.events.send(MeshEvent::PeerDown { node: rank, reason });
        self.joiner_lost(rank);
        let _ = now;
    }

    // ---- dialling -------------------------------------------------------

    fn dial_patience(&self) -> Duration {
        if self.settings.peer_timeout.is_zero() {
            self.settings.establish_timeout
        } else {
            self.settings.peer_timeout
        }
    }

    fn start_dial(&mut self, rank: u32, deadline: Instant, now: Instant) {
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        peer.dial = Some(Dial {
            conn: None,
            retry_at: None,
            pause: FIRST_RETRY,
            deadline,
            attempts: 0,
            last_error: String::new(),
        });
        self.next_timer = self.next_timer.min(deadline);
        self.attempt(rank, now);
    }

    /// One attempt to connect to `rank`.
    fn attempt(&mut self, rank: u32, now: Instant) {
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        let Some(addr) = peer.addr else {
            if !peer.looked_up && self.me.rank != 0 && rank != 0 {
                // Joined after the table: rank 0 knows where it listens. The dial
                // goes on when the answer comes (or fails at its deadline).
                peer.looked_up = true;
                let lookup = Control::Lookup { rank }.encode();
                return self.transmit(0, Kind::Control, lookup, now);
            }
            let reason = format!("rank {rank} has no known address");
            return self.peer_lost(rank, reason, false, now);
        };
        let Some(dial) = peer.dial.as_mut() else {
            return;
        };
        dial.attempts += 1;
        dial.retry_at = None;
        match Conn::dial(addr, Expect::Rank(rank), now) {
            Ok(conn) => {
                if let Some(index) = self.insert(conn, None, now) {
                    if let Some(dial) = self.peers[rank as usize].dial.as_mut() {
                        dial.conn = Some(index);
                    }
                    self.next_timer = self.next_timer.min(now + HANDSHAKE_TIMEOUT);
                }
            }
            Err(err) => self.dial_failed(rank, ConnError::Io(err), now),
        }
    }

    fn dial_failed(&mut self, rank: u32, err: ConnError, now: Instant) {
        let forming = self.forming();
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        let Some(dial) = peer.dial.as_mut() else {
            return;
        };
        dial.conn = None;
        let definitive = matches!(
            &err,
            ConnError::Handshake(
                HandshakeError::Rejected
                    | HandshakeError::BadProof
                    | HandshakeError::Version { .. }
                    | HandshakeError::NotHerald
                    | HandshakeError::Malformed(_)
            )
        );
        // Once the job has formed every rank's listener is up: a refusal means
        // the process is gone (while forming, rank 0 may just not listen yet).
        let refused = !forming
            && matches!(&err, ConnError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused);
        dial.last_error = err.to_string();
        let addr = peer.addr;
        if definitive || refused || now + dial.pause >= dial.deadline {
            let attempts = dial.attempts;
            let last = dial.last_error.clone();
            if forming && (rank == 0 || matches!(self.formation, Formation::Joining)) {
                let addr = addr.unwrap_or(self.settings.coordinator);
                let error = match err {
                    ConnError::Handshake(reason) => TcpError::Handshake { rank, addr, reason },
                    ConnError::Io(source) => TcpError::Connect { rank, addr, source },
                    other => TcpError::Connect {
                        rank,
                        addr,
                        source: io::Error::other(other.to_string()),
                    },
                };
                return self.fail_formation(error);
            }
            let reason = format!(
                "cannot reach rank {rank} at {}: {last} ({attempts} attempts)",
                addr.map_or("no address".to_owned(), |a| a.to_string())
            );
            return self.peer_lost(rank, reason, false, now);
        }
        if dial.attempts == 1 && matches!(self.formation, Formation::Joining) {
            // A job being joined is running, so its rank 0 should answer at
            // once: say so now rather than only when the deadline passes.
            tracing::warn!(
                "herald-tcp: joining through rank 0 at {}: {}; retrying until the establish \
                 timeout ({:?})",
                addr.map_or("no address".to_owned(), |a| a.to_string()),
                dial.last_error,
                self.settings.establish_timeout
            );
        }
        dial.retry_at = Some(now + dial.pause);
        dial.pause = (dial.pause * 2).min(MAX_RETRY);
        self.next_timer = self.next_timer.min(now + dial.pause);
    }

    fn dial_succeeded(&mut self, rank: u32, index: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        peer.dial = None;
        peer.conns.push(index);
        peer.send_via = Some(index);
        if let Some(slot) = self.conns[index].as_mut() {
            slot.in_use = true;
        }
        if rank == 0 && matches!(self.formation, Formation::Member | Formation::Joining) {
            let mut listen = self.local_addr;
            if listen.ip().is_unspecified() {
                // A wildcard bind is not an address others can dial; the
                // interface that reached rank 0 is the one they can most likely use.
                if let Some(via) = self.conns[index]
                    .as_ref()
                    .and_then(|s| s.conn.outlet.stream.local_addr().ok())
                {
                    listen.set_ip(via.ip());
                }
            }
            if listen.ip().is_loopback() && !self.settings.coordinator.ip().is_loopback() {
                tracing::warn!(
                    %listen, coordinator = %self.settings.coordinator,
                    "herald-tcp: this rank listens on loopback but rank 0 is remote; ranks on \
                     other hosts cannot reach it: set MeshConfig::bind (HERALD_BIND)"
                );
            }
            let register = Control::Register { listen }.encode();
            self.send_control(0, &register, now);
        }
        self.flush_waiting(rank, now);
        if self.peers[rank as usize].state == PeerState::Retired {
            self.close_conn_gently(index, now);
        } else {
            self.publish_route(rank);
        }
    }

    /// Frames that waited for a connection go out on it.
    fn flush_waiting(&mut self, rank: u32, now: Instant) {
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        if peer.waiting.is_empty() {
            return;
        }
        let Some(conn) = peer.send_via.or_else(|| peer.conns.first().copied()) else {
            return;
        };
        peer.send_via = Some(conn);
        let waiting = std::mem::take(&mut peer.waiting);
        peer.waiting_bytes = 0;
        let Some(slot) = self.conns[conn].as_mut() else {
            return;
        };
        slot.in_use = true;
        let mut sent = Vec::new();
        for (kind, payload) in waiting {
            if kind == Kind::Data {
                sent.push(payload.len());
            }
            if let Err(err) = slot.conn.outlet.send(kind, &payload, now) {
                return self.conn_failed(conn, ConnError::Io(err), now);
            }
        }
        for len in sent {
            count_sent(&self.shared.stats, rank, len);
        }
    }

    // ---- joins ----------------------------------------------------------

    /// Rank 0: a process that proved the secret asks to join. It gets the next
    /// rank (never one used before), and is admitted once it says where it listens.
    fn accept_joiner(&mut self, index: usize, now: Instant) {
        if self.me.rank != 0 || self.forming() {
            let remote = self.conns[index].as_ref().map(|s| s.conn.remote);
            self.drop_conn(index);
            if let Some(remote) = remote {
                self.refusals.note(
                    remote,
                    "a join, but joins go to rank 0 of a formed job",
                    now,
                );
            }
            return;
        }
        let rank = self.peers.len() as u32;
        self.peers.push(Peer::default());
        self.peers[rank as usize].conns.push(index);
        if let Some(slot) = self.conns[index].as_mut() {
            slot.conn.accept_hello(rank);
            slot.in_use = true;
        }
    }

    /// Rank 0: the joiner `rank` listens at `listen`: it is admitted.
    fn joiner_registered(&mut self, rank: u32, listen: SocketAddr, now: Instant) {
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        if peer.addr.is_some() || rank < self.me.size {
            return;
        }
        peer.addr = Some(listen);
        self.send_control(rank, &Control::Admit { rank }.encode(), now);
        if let Ok(mut stats) = self.shared.stats.lock() {
            stats_entry(&mut stats, rank);
        }
        tracing::debug!(rank, %listen, "herald-tcp: admitted a joining process");
        for node in self.joins.admitted(rank) {
            self.events.send(MeshEvent::Joined { node });
        }
    }

    /// Rank 0: `rank` was reported lost; joiners it held back are reported now
    /// (see [`JoinOrder`]).
    fn joiner_lost(&mut self, rank: u32) {
        if self.me.rank != 0 || !matches!(self.formation, Formation::Formed) {
            return;
        }
        for node in self.joins.lost(rank) {
            self.events.send(MeshEvent::Joined { node });
        }
    }

    /// A joiner: rank 0 gave us our rank.
    fn on_admitted(&mut self, rank: u32, now: Instant) {
        if !matches!(self.formation, Formation::Joining) {
            return;
        }
        self.me.rank = rank;
        self.me.size = rank + 1;
        self.refusals = Refusals::new(rank, &self.me.cluster_id);
        while self.peers.len() <= rank as usize {
            self.peers.push(Peer::default());
        }
        self.formed(now);
    }

    /// Rank 0 answered a lookup.
    fn on_address(&mut self, rank: u32, addr: Option<SocketAddr>, now: Instant) {
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        match addr {
            Some(addr) => {
                peer.addr = Some(addr);
                if peer.dial.is_some() {
                    self.attempt(rank, now);
                }
            }
            None => {
                let reason = format!("rank {rank} is not a live rank of the job (rank 0 says)");
                self.peer_lost(rank, reason, false, now);
            }
        }
    }

    // ---- timers ---------------------------------------------------------

    fn on_timers(&mut self, now: Instant) {
        let mut next = now + Duration::from_secs(3600);
        let heartbeat = self.settings.heartbeat;
        let timeout = self.settings.peer_timeout;
        if self.forming() {
            let deadline = self.formation_deadline;
            if now >= deadline {
                return self.fail_formation(self.formation_timeout());
            }
            next = next.min(deadline);
        }
        if let Some(at) = self.accept_again_at {
            if now >= at {
                self.accept_again_at = None;
                self.accept_all(now);
            } else {
                next = next.min(at);
            }
        }
        self.refusals.tick(now);
        if let Some(due) = self.refusals.next_due() {
            next = next.min(due);
        }
        for index in 0..self.conns.len() {
            let Some(slot) = self.conns[index].as_mut() else {
                continue;
            };
            if let Some(until) = slot.closing {
                if now >= until || (slot.peer_closed && slot.conn.outlet.is_drained()) {
                    self.drop_conn(index);
                } else {
                    next = next.min(until);
                }
                continue;
            }
            if !slot.conn.is_open() {
                // Our own dials and peers that proved the secret get the full
                // handshake time; strangers get a short deadline.
                let limit = if slot.conn.rank.is_some() || slot.conn.is_authenticated() {
                    HANDSHAKE_TIMEOUT
                } else {
                    UNAUTHENTICATED_DEADLINE
                };
                let due = slot.conn.opened_at + limit;
                if now >= due {
                    let err = ConnError::Handshake(HandshakeError::TimedOut);
                    self.conn_failed(index, err, now);
                } else {
                    next = next.min(due);
                }
                continue;
            }
            if !heartbeat.is_zero() {
                let due = slot.conn.outlet.last_sent() + heartbeat;
                if now >= due {
                    if let Err(err) = slot.conn.outlet.send(Kind::Heartbeat, &[], now) {
                        self.conn_failed(index, ConnError::Io(err), now);
                        continue;
                    }
                    next = next.min(now + heartbeat);
                } else {
                    next = next.min(due);
                }
            }
            if !timeout.is_zero() {
                let due = slot.conn.last_heard + timeout;
                if now >= due {
                    self.silent(index, now);
                    next = next.min(now + timeout);
                } else {
                    next = next.min(due);
                }
            }
        }
        for rank in 0..self.peers.len() {
            if let PeerState::Reported { close_at } = self.peers[rank].state {
                if now >= close_at {
                    self.peers[rank].state = PeerState::Retired;
                    for conn in self.peers[rank].conns.clone() {
                        self.drop_conn(conn);
                    }
                    self.peers[rank].state = PeerState::Down;
                } else {
                    next = next.min(close_at);
                }
            }
            let Some(dial) = self.peers[rank].dial.as_ref() else {
                continue;
            };
            if let Some(at) = dial.retry_at {
                if now >= at {
                    self.attempt(rank as u32, now);
                } else {
                    next = next.min(at);
                }
            } else if now >= dial.deadline {
                match dial.conn {
                    // The attempt in flight fails; that ends the dial.
                    Some(conn) => {
                        let err = ConnError::Handshake(HandshakeError::TimedOut);
                        self.conn_failed(conn, err, now);
                    }
                    None => {
                        let reason = format!(
                            "cannot reach rank {rank}: {} (no answer within {:?})",
                            dial.last_error,
                            self.dial_patience()
                        );
                        self.peer_lost(rank as u32, reason, false, now);
                    }
                }
            } else {
                next = next.min(dial.deadline);
            }
        }
        if let Some(until) = self.closing_until {
            next = next.min(until);
        }
        self.next_timer = next;
    }

    /// Nothing arrived on `index` for the peer timeout.
    fn silent(&mut self, index: usize, now: Instant) {
        let Some(slot) = self.conns[index].as_ref() else {
            return;
        };
        let Some(rank) = slot.conn.rank else {
            return;
        };
        if !slot.in_use {
            // Nobody needs this connection: let it go quietly.
            self.drop_conn(index);
            return;
        }
        let silent = now.duration_since(slot.conn.last_heard);
        let reason = silence(rank, silent, slot.conn.partial());
        if self.forming() {
            return self.peer_lost(rank, reason, false, now);
        }
        let Some(peer) = self.peers.get_mut(rank as usize) else {
            return;
        };
        if peer.state != PeerState::Live {
            return;
        }
        // Reported now; the link stays open for one more timeout so the owner can
        // queue the news that it was declared down (and retire the link).
        peer.state = PeerState::Reported {
            close_at: now + self.settings.peer_timeout,
        };
        tracing::warn!(peer = rank, %reason, "herald-tcp: link to rank {rank} lost");
        self.events.send(MeshEvent::PeerDown { node: rank, reason });
        self.joiner_lost(rank);
    }

    /// A wake-up long after the previous one means this process itself was not
    /// running (stopped, or starved): peers get a fresh timeout rather than being
    /// blamed for our own pause. What they sent meanwhile is read first.
    fn forgive_own_pause(&mut self, now: Instant, last_woke: Instant) {
        let timeout = self.settings.peer_timeout;
        if timeout.is_zero() || now.duration_since(last_woke) <= timeout / 2 {
            return;
        }
        // Dials and handshakes under way get the time back too: peers that
        // closed them meanwhile are tried again rather than given up.
        let paused = now.duration_since(last_woke);
        for slot in self.conns.iter_mut().flatten() {
            slot.conn.last_heard = now;
            if !slot.conn.is_open() {
                slot.conn.opened_at = now;
            }
        }
        for peer in &mut self.peers {
            if let Some(dial) = peer.dial.as_mut() {
                dial.deadline += paused;
            }
        }
    }

    fn formation_timeout(&self) -> TcpError {
        let missing = match &self.formation {
            Formation::Coordinator { addrs } => addrs
                .iter()
                .enumerate()
                .filter(|(_, a)| a.is_none())
                .map(|(r, _)| r as u32)
                .collect(),
            _ => vec![0],
        };
        TcpError::Timeout {
            after: self.settings.establish_timeout,
            missing,
        }
    }

    /// Runs `f` on the route to `to`.
    fn with_route(&self, to: u32, f: impl FnOnce(&mut Route)) {
        let routes = self.shared.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(route) = routes.get(to as usize) {
            f(&mut route.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Lets senders write to `to` themselves once its connection is up and no
    /// frame for it waits in the I/O thread.
    fn publish_route(&self, to: u32) {
        let Some(peer) = self.peers.get(to as usize) else {
            return;
        };
        if !matches!(peer.state, PeerState::Live | PeerState::Reported { .. }) {
            return;
        }
        let Some(outlet) = peer
            .send_via
            .filter(|&c| self.is_open(c))
            .and_then(|c| self.conns[c].as_ref())
            .map(|s| Arc::clone(&s.conn.outlet))
        else {
            return;
        };
        {
            let routes = self.shared.routes.read().unwrap_or_else(|p| p.into_inner());
            if to as usize >= routes.len() {
                drop(routes);
                let mut routes = self
                    .shared
                    .routes
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                while routes.len() <= to as usize {
                    routes.push(Mutex::default());
                }
            }
        }
        self.with_route(to, |route| {
            if route.in_flight == 0 && route.via.is_none() {
                route.via = Some(outlet);
            }
        });
    }

    /// Senders go through the I/O thread again (the link is closing or gone).
    fn unpublish_route(&self, to: u32) {
        self.with_route(to, |route| route.via = None);
    }
}

/// Counts a data frame sent to `rank`.
fn count_sent(stats: &Mutex<Vec<PeerStats>>, rank: u32, len: usize) {
    if let Ok(mut stats) = stats.lock() {
        let entry = stats_entry(&mut stats, rank);
        entry.frames_sent += 1;
        entry.bytes_sent += len as u64;
    }
}

/// The counts of `rank`, added in rank order if new.
fn stats_entry(stats: &mut Vec<PeerStats>, rank: u32) -> &mut PeerStats {
    let at = match stats.binary_search_by_key(&rank, |s| s.node) {
        Ok(at) => at,
        Err(at) => {
            stats.insert(
                at,
                PeerStats {
                    node: rank,
                    ..PeerStats::default()
                },
            );
            at
        }
    };
    &mut stats[at]
}

/// Why a silent peer is reported down.
fn silence(peer: u32, silent: Duration, partial: Option<(usize, usize)>) -> String {
    let during = match partial {
        Some((got, len)) => format!(" in the middle of a frame ({got} of {len} bytes received)"),
        None => String::new(),
    };
    format!(
        "rank {peer} sent nothing for {:.1} s{during} (peer timeout; no heartbeat either): \
         it is stopped, hung or cut off",
        silent.as_secs_f64()
    )
}

/// Lets this process hold a connection per rank of a large job: the soft limit
/// on open files goes up to the hard one.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct; raising the soft limit up to the
        // hard one is always permitted.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// Lets hundreds of ranks connect to rank 0 at once without their SYNs being
/// dropped (std listens with a backlog of 128; listening again only resizes it).
fn widen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is a bound, listening socket owned by `listener`,
    // which outlives the call; listen() on it only changes the backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
}
