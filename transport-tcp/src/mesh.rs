//! The mesh: this rank's links to the others, frames in, events out.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::config::{Agreed, MeshConfig};
use crate::error::TcpError;
use crate::events::{EventHook, EventSender, PollGate};
use crate::handshake::{Identity, JOINING};
use crate::raw::RawLink;
use crate::reactor::{Command, Formed, Reactor, Settings, Shared};
use crate::stats::LinkStats;

/// What the mesh reports to its owner, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// A frame from `from`; frames from one peer arrive in the order it sent them.
    Frame {
        /// The sending rank.
        from: u32,
        /// The frame, exactly as passed to [`Mesh::send`].
        bytes: Vec<u8>,
    },
    /// The link to `node` is gone for good (crash-stop: links never reconnect):
    /// it closed, failed, carried a record that failed authentication, could not be
    /// made, or `node` sent nothing for the peer timeout. Reported exactly once per
    /// node, never for this rank's own shutdown, and never after
    /// [`Mesh::close_peer`]. No frame from `node` is delivered after it. For a
    /// silent peer, frames sent to it before [`Mesh::close_peer`] (or one more peer
    /// timeout) still go out, so a peer that was only stopped can learn its fate.
    PeerDown {
        /// The lost rank.
        node: u32,
        /// What happened, for logs and error messages.
        reason: String,
    },
    /// Rank 0 only: a process proved the secret and joined the running job as
    /// rank `node` (a rank never used before). Every rank can send to it now.
    Joined {
        /// The joiner's rank.
        node: u32,
    },
}

/// Authenticated, encrypted TCP links between the ranks of a job, made on demand.
///
/// ```no_run
/// use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};
/// # fn main() -> Result<(), herald_tcp::TcpError> {
/// let secret = Secret::from_hex(&std::env::var("HERALD_SECRET").unwrap()).unwrap();
/// let config = MeshConfig::new(1, 2, "127.0.0.1:7000".parse().unwrap(), secret);
/// let (mesh, events) = Mesh::establish(config)?;
/// mesh.send(0, b"hello".to_vec());
/// if let Ok(MeshEvent::Frame { from, bytes }) = events.recv() {
///     println!("rank {from} says {bytes:?}");
/// }
/// mesh.shutdown();
/// # Ok(()) }
/// ```
pub struct Mesh {
    rank: u32,
    size: u32,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Frames a rank sends to itself are delivered straight to its own events.
    events: EventSender,
    io_thread: Option<JoinHandle<()>>,
    /// Every setting the links agreed on, herald-tcp's own first.
    agreed: Vec<Agreed>,
    /// Silence after which a peer is reported down (zero: never).
    peer_timeout: Duration,
}

impl Mesh {
    /// Joins the job: blocks until rank 0 has every rank's address and this rank
    /// has it too, or fails with the reason (on every rank, when the failure is
    /// rank 0's to see). No link but the one with rank 0 is made here; the others
    /// are made when the first frame needs them.
    ///
    /// Rank 0 listens on `config.coordinator`; every other rank listens on an
    /// ephemeral port of `config.bind`.
    pub fn establish(config: MeshConfig) -> Result<(Mesh, Receiver<MeshEvent>), TcpError> {
        let listener = bind_listener(&config)?;
        Mesh::establish_with_listener(config, listener)
    }

    /// Like [`Mesh::establish`], on a listener the caller has already bound: for
    /// rank 0 the coordinator listener (bind port 0 and hand its address to the
    /// other ranks: no port race), for other ranks their own listener.
    pub fn establish_with_listener(
        config: MeshConfig,
        listener: TcpListener,
    ) -> Result<(Mesh, Receiver<MeshEvent>), TcpError> {
        config.validate()?;
        start(config, listener, false)
    }

    /// Joins a job that is already running, through its rank 0 at
    /// `config.coordinator`: proves the cluster secret like any rank and returns
    /// once admitted. [`Mesh::rank`] is then the rank rank 0 gave this process (the
    /// next one never used, so a restarted process is a new rank) and
    /// [`Mesh::size`] the number of ranks ever admitted, this one included.
    /// `config.rank` and `config.size` are ignored. Rank 0 reports
    /// [`MeshEvent::Joined`]; joins need rank 0 alive.
    pub fn join(mut config: MeshConfig) -> Result<(Mesh, Receiver<MeshEvent>), TcpError> {
        config.rank = 1;
        config.size = config.size.max(2);
        config.validate()?;
        let listener = bind_listener(&config)?;
        start(config, listener, true)
    }

    /// Forms the mesh like [`Mesh::establish`], then dials every other rank and
    /// hands back the authenticated links themselves (indexed by rank; `None` at
    /// this rank) instead of running them: for tests that play a misbehaving rank
    /// (one that stalls in the middle of a frame, or sends garbage). Not for jobs.
    #[doc(hidden)]
    pub fn establish_raw(config: MeshConfig) -> Result<Vec<Option<RawLink>>, TcpError> {
        config.validate()?;
        let listener = bind_listener(&config)?;
        crate::raw::establish(&config, &listener)
    }

    /// This process's rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Number of ranks in the job when this rank joined it.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The address this rank's listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queues `frame` for rank `to` and returns at once. A frame to a peer whose
    /// link is down is dropped silently (its `PeerDown` was or will be reported);
    /// a frame to this rank itself comes back as a [`MeshEvent::Frame`]. A frame
    /// longer than the receiver's `max_frame_bytes` makes the receiver close the
    /// link (a `PeerDown` on both sides), so keep frames within the limit.
    pub fn send(&self, to: u32, frame: Vec<u8>) {
        if to == self.rank {
            self.events.send(MeshEvent::Frame {
                from: to,
                bytes: frame,
            });
            return;
        }
        self.shared.send(to, frame);
    }

    /// Calls `hook` after each event this mesh puts in its channel, on the thread
    /// that put it there (the I/O thread, or a sender to itself), so the receiver
    /// can handle it at once instead of waking a thread of its own. `hook` must
    /// not block. Returns false if a hook was set already (the first stays).
    pub fn on_events(&self, hook: EventHook) -> bool {
        self.events.set_hook(hook)
    }

    /// Makes the I/O thread ask `gate` before each poll while it polls after
    /// activity (see [`MeshConfig::spin`](crate::MeshConfig::spin)): when it says
    /// no, the thread sleeps until an event instead. Returns false if a gate was
    /// set already (the first stays).
    pub fn set_poll_gate(&self, gate: PollGate) -> bool {
        self.shared.poll_gate.set(gate).is_ok()
    }

    /// Closes the link to `to` for good, without waiting: frames already queued for
    /// it are sent first (they may tell it why), then the connection is closed (a
    /// second one `to` dialled, once `to` has closed the first or 2 s later);
    /// later frames to it are dropped, frames from it discarded, and no
    /// [`MeshEvent::PeerDown`] is reported for it. For a peer the job declared down.
    pub fn close_peer(&self, to: u32) {
        self.shared.command(Command::Close { to });
    }

    /// The settings every link agreed on at set-up (with the same value on every
    /// rank): the frame limit, heartbeat and peer timeout, then
    /// [`MeshConfig::agreed`].
    pub fn agreed(&self) -> &[Agreed] {
        &self.agreed
    }

    /// How long a silent peer (stopped, cut off, hung) is given before it is
    /// reported down, or None if silence is not detected (peer timeout 0).
    pub fn peer_timeout(&self) -> Option<Duration> {
        (!self.peer_timeout.is_zero()).then_some(self.peer_timeout)
    }

    /// Frames and payload bytes sent and received so far, in total and per peer.
    pub fn stats(&self) -> LinkStats {
        let per_peer = self
            .shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let mut stats = LinkStats::default();
        for peer in &per_peer {
            stats.frames_sent += peer.frames_sent;
            stats.bytes_sent += peer.bytes_sent;
            stats.frames_received += peer.frames_received;
            stats.bytes_received += peer.bytes_received;
        }
        stats.per_peer = per_peer;
        stats
    }

    /// Orderly close: frames already queued are sent, every link is half-closed,
    /// and peers are given up to two seconds to close their side. Emits no
    /// `PeerDown` on this side; peers see one `PeerDown` for this rank.
    /// Dropping the mesh does the same.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(thread) = self.io_thread.take() {
            self.shared.command(Command::Shutdown);
            let _ = thread.join();
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Starts the I/O thread on `listener` and waits for formation (or admission).
fn start(
    config: MeshConfig,
    listener: TcpListener,
    join: bool,
) -> Result<(Mesh, Receiver<MeshEvent>), TcpError> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| TcpError::Io { context, source }
    };
    let local_addr = listener
        .local_addr()
        .map_err(io("reading the listen address"))?;
    let agreed = config.all_agreed();
    let me = Identity {
        rank: if join { JOINING } else { config.rank },
        size: if join { 0 } else { config.size },
        cluster_id: config.cluster_id.clone(),
        secret: config.secret.clone(),
        agreed: agreed.clone(),
    };
    let settings = Settings {
        max_frame_bytes: config.max_frame_bytes,
        max_queued_bytes: config.max_queued_bytes,
        heartbeat: config.heartbeat,
        peer_timeout: config.peer_timeout,
        establish_timeout: config.establish_timeout,
        spin: crate::config::poll_from_env().unwrap_or(config.spin),
        coordinator: config.coordinator,
        join,
    };
    let (events_tx, events) = crossbeam_channel::unbounded();
    let events_tx = EventSender::new(events_tx);
    let (formed_tx, formed) = crossbeam_channel::bounded(1);
    let (reactor, shared) = Reactor::new(listener, me, settings, events_tx.clone(), formed_tx)
        .map_err(io("setting up the I/O loop"))?;
    let name = if join {
        "herald-io-join".to_owned()
    } else {
        format!("herald-io{}", config.rank)
    };
    let io_thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || reactor.run())
        .map_err(io("starting the I/O thread"))?;
    let Formed { rank, size } = match formed.recv() {
        Ok(Ok(formed)) => formed,
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            return Err(TcpError::Formation {
                reason: "the I/O thread stopped before the job formed".into(),
            });
        }
    };
    tracing::debug!(rank, size, %local_addr, "herald-tcp: mesh formed");
    let mesh = Mesh {
        rank,
        size,
        local_addr,
        shared,
        events: events_tx,
        io_thread: Some(io_thread),
        agreed,
        peer_timeout: config.peer_timeout,
    };
    Ok((mesh, events))
}

/// Checks `config` and binds this rank's listener: rank 0 on the coordinator
/// address, every other rank on an ephemeral port of its bind address.
fn bind_listener(config: &MeshConfig) -> Result<TcpListener, TcpError> {
    config.validate()?;
    let addr = if config.rank == 0 {
        config.coordinator
    } else {
        SocketAddr::new(config.bind, 0)
    };
    TcpListener::bind(addr).map_err(|source| TcpError::Bind { addr, source })
}
