//! The mesh: one authenticated link to every other rank, frames in, events out.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::acceptor::{Acceptor, Local};
use crate::config::Agreed;
use crate::config::MeshConfig;
use crate::error::TcpError;
use crate::formation::form;
use crate::link::{Link, LinkStats, Liveness};

/// Longest a rank waits for the handshake of one connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest [`Mesh::shutdown`] waits for queued frames to leave and peers to close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

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
    /// it closed, failed, or `node` sent nothing for the peer timeout. Reported
    /// exactly once per node, never for this rank's own shutdown, and never after
    /// [`Mesh::close_peer`]. No frame from `node` is delivered after it. For a
    /// silent peer, frames sent to it before [`Mesh::close_peer`] (or one more peer
    /// timeout) still go out, so a peer that was only stopped can learn its fate.
    PeerDown {
        /// The lost rank.
        node: u32,
        /// What happened, for logs and error messages.
        reason: String,
    },
}

/// Authenticated, framed, full-mesh TCP links between the ranks of a job.
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
    /// Indexed by rank; `None` at this rank's own index.
    links: Vec<Option<Link>>,
    /// Frames a rank sends to itself are delivered straight to its own events.
    events: Sender<MeshEvent>,
    closing: Arc<AtomicBool>,
    acceptor: Option<Acceptor>,
    /// Every setting the links agreed on, herald-tcp's own first.
    agreed: Vec<Agreed>,
}

impl Mesh {
    /// Blocks until every rank is connected and authenticated to every other,
    /// or fails with the reason (on every rank, when the failure is rank 0's to see).
    ///
    /// Rank 0 listens on `config.coordinator`; every other rank listens on an
    /// ephemeral port of `config.bind`.
    pub fn establish(config: MeshConfig) -> Result<(Mesh, Receiver<MeshEvent>), TcpError> {
        let listener = bind_listener(&config)?;
        Mesh::establish_with_listener(config, listener)
    }

    /// Forms the mesh like [`Mesh::establish`] but hands back the authenticated
    /// streams themselves (indexed by rank; `None` at this rank) instead of running
    /// links on them: for tests that play a misbehaving rank (one that stalls in
    /// the middle of a frame, or sends garbage after the handshake). Not for jobs.
    #[doc(hidden)]
    pub fn establish_raw(config: MeshConfig) -> Result<Vec<Option<TcpStream>>, TcpError> {
        let listener = bind_listener(&config)?;
        let local = Arc::new(Local {
            rank: config.rank,
            size: config.size,
            cluster_id: config.cluster_id.clone(),
            secret: config.secret.clone(),
            handshake_timeout: HANDSHAKE_TIMEOUT.min(config.establish_timeout),
            agreed: config.all_agreed(),
        });
        let mut formed = form(&config, local, listener)?;
        formed.acceptor.stop();
        Ok(formed.streams)
    }

    /// Like [`Mesh::establish`], on a listener the caller has already bound: for
    /// rank 0 the coordinator listener (bind port 0 and hand its address to the
    /// other ranks: no port race), for other ranks their own listener.
    pub fn establish_with_listener(
        config: MeshConfig,
        listener: TcpListener,
    ) -> Result<(Mesh, Receiver<MeshEvent>), TcpError> {
        config.validate()?;
        let local_addr = listener.local_addr().map_err(|source| TcpError::Io {
            context: "reading the listen address".into(),
            source,
        })?;
        let local = Arc::new(Local {
            rank: config.rank,
            size: config.size,
            cluster_id: config.cluster_id.clone(),
            secret: config.secret.clone(),
            handshake_timeout: HANDSHAKE_TIMEOUT.min(config.establish_timeout),
            agreed: config.all_agreed(),
        });
        let formed = form(&config, local, listener)?;
        let (events_tx, events) = crossbeam_channel::unbounded();
        let closing = Arc::new(AtomicBool::new(false));
        let mut mesh = Mesh {
            rank: config.rank,
            size: config.size,
            local_addr,
            links: Vec::with_capacity(formed.streams.len()),
            events: events_tx.clone(),
            closing: Arc::clone(&closing),
            acceptor: Some(formed.acceptor),
            agreed: config.all_agreed(),
        };
        for (peer, stream) in formed.streams.into_iter().enumerate() {
            let Some(stream) = stream else {
                mesh.links.push(None);
                continue;
            };
            let link = Link::start(
                peer as u32,
                stream,
                config.max_frame_bytes,
                Liveness {
                    heartbeat: config.heartbeat,
                    peer_timeout: config.peer_timeout,
                },
                Arc::clone(&closing),
                events_tx.clone(),
            )
            .map_err(|source| TcpError::Io {
                context: format!("starting the link to rank {peer}"),
                source,
            })?;
            mesh.links.push(Some(link));
        }
        tracing::debug!(rank = mesh.rank, size = mesh.size, %local_addr, "herald-tcp: mesh formed");
        Ok((mesh, events))
    }

    /// This process's rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Number of ranks in the job.
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
            let _ = self.events.send(MeshEvent::Frame {
                from: to,
                bytes: frame,
            });
            return;
        }
        match self.links.get(to as usize) {
            Some(Some(link)) => link.send(frame),
            _ => tracing::warn!(
                to,
                size = self.size,
                "herald-tcp: frame to a rank outside the job dropped"
            ),
        }
    }

    /// Closes the link to `to` for good, without waiting: frames already queued for
    /// it are sent first (they may tell it why), then the connection is closed;
    /// later frames to it are dropped, frames from it discarded, and no
    /// [`MeshEvent::PeerDown`] is reported for it. For a peer the job declared down.
    pub fn close_peer(&self, to: u32) {
        if let Some(Some(link)) = self.links.get(to as usize) {
            link.retire();
        }
    }

    /// The settings every link agreed on at set-up (with the same value on every
    /// rank): the frame limit, heartbeat and peer timeout, then
    /// [`MeshConfig::agreed`].
    pub fn agreed(&self) -> &[Agreed] {
        &self.agreed
    }

    /// Frames and payload bytes sent and received so far, in total and per peer.
    pub fn stats(&self) -> LinkStats {
        let mut stats = LinkStats::default();
        for link in self.links.iter().flatten() {
            let peer = link.stats();
            stats.frames_sent += peer.frames_sent;
            stats.bytes_sent += peer.bytes_sent;
            stats.frames_received += peer.frames_received;
            stats.bytes_received += peer.bytes_received;
            stats.per_peer.push(peer);
        }
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
        self.closing.store(true, Ordering::Release);
        if let Some(mut acceptor) = self.acceptor.take() {
            acceptor.stop();
        }
        let deadline = Instant::now() + CLOSE_LINGER;
        // All writers first, so every peer gets its FIN at about the same time.
        for link in self.links.iter_mut().flatten() {
            link.close_writer(deadline);
        }
        for link in self.links.iter_mut().flatten() {
            link.close_reader(deadline);
        }
        self.links.clear();
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
