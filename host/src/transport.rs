//! How the event loop reaches other nodes: herald-tcp's [`Mesh`], or channels
//! between runtimes of one process (for tests and embedding).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use herald_tcp::{EventHook, Mesh, MeshEvent, PollGate};

/// Sends frames to other nodes. Implemented for herald-tcp's [`Mesh`]; another
/// runtime can plug in its own links with
/// [`Runtime::start_with_transport`](crate::Runtime::start_with_transport).
pub trait Transport: Send + 'static {
    /// Queues `frame` for node `to` without blocking. Frames to one node arrive in
    /// order; a frame to a node that is down may be dropped (its `PeerDown` says so).
    fn send(&self, to: u32, frame: Vec<u8>);

    /// Closes the link to `to` for good, without blocking: frames already queued
    /// for it still go, later ones are dropped, and no `PeerDown` is reported for it.
    /// Called once the job has declared `to` down.
    fn close_peer(&self, to: u32) {
        let _ = to;
    }

    /// Sends what is queued and closes the links.
    fn shutdown(self: Box<Self>) {}

    /// Calls `hook` on the transport's own thread after each event it puts in
    /// its channel, so the runtime handles the event there and then (the hook
    /// never blocks). Returns false if the transport cannot; the runtime's own
    /// thread then watches the channel.
    fn on_events(&self, hook: EventHook) -> bool {
        let _ = hook;
        false
    }

    /// How long the transport gives a silent peer (stopped, cut off, hung) before
    /// it reports it down, or None if it never does (MPI, or a peer timeout of 0):
    /// a stopped node then holds what involves it until it resumes or the job is
    /// ended. Said in the warnings about long waits.
    fn silence_timeout(&self) -> Option<Duration> {
        None
    }

    /// Makes the transport's threads that poll for events ask `gate` first, and
    /// sleep until an event instead when it says no (the runtime's workers are
    /// busy with user code). Transports that never poll ignore it.
    fn set_poll_gate(&self, gate: PollGate) {
        let _ = gate;
    }
}

impl Transport for Mesh {
    fn send(&self, to: u32, frame: Vec<u8>) {
        Mesh::send(self, to, frame);
    }

    fn close_peer(&self, to: u32) {
        Mesh::close_peer(self, to);
    }

    fn shutdown(self: Box<Self>) {
        Mesh::shutdown(*self);
    }

    fn on_events(&self, hook: EventHook) -> bool {
        Mesh::on_events(self, hook)
    }

    fn set_poll_gate(&self, gate: PollGate) {
        Mesh::set_poll_gate(self, gate);
    }

    fn silence_timeout(&self) -> Option<Duration> {
        self.peer_timeout()
    }
}

/// The transport of a one-node job: there is nobody to send to.
pub(crate) struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, to: u32, _frame: Vec<u8>) {
        tracing::warn!(to, "herald: frame dropped in a one-node job");
    }
}

/// Channels to the other runtimes of this process; the list grows as runtimes
/// join.
pub(crate) struct LocalTransport {
    me: u32,
    peers: Arc<RwLock<Vec<Sender<MeshEvent>>>>,
    /// Links closed for good.
    closed: Mutex<BTreeSet<u32>>,
}

impl LocalTransport {
    pub(crate) fn new(me: u32, peers: Arc<RwLock<Vec<Sender<MeshEvent>>>>) -> Self {
        Self {
            me,
            peers,
            closed: Mutex::new(BTreeSet::new()),
        }
    }

    fn peer(&self, to: u32) -> Option<Sender<MeshEvent>> {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.get(to as usize).cloned()
    }

    fn is_closed(&self, to: u32) -> bool {
        let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        closed.contains(&to)
    }
}

impl Transport for LocalTransport {
    fn send(&self, to: u32, frame: Vec<u8>) {
        if self.is_closed(to) {
            return;
        }
        if let Some(peer) = self.peer(to) {
            let _ = peer.send(MeshEvent::Frame {
                from: self.me,
                bytes: frame,
            });
        }
    }

    fn close_peer(&self, to: u32) {
        let newly = {
            let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
            closed.insert(to)
        };
        // Like a TCP close: the peer sees the link go after what was sent before.
        if newly {
            if let Some(peer) = self.peer(to) {
                let _ = peer.send(MeshEvent::PeerDown {
                    node: self.me,
                    reason: format!("node {} closed the link", self.me),
                });
            }
        }
    }

    fn shutdown(self: Box<Self>) {
        let peers = self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (node, peer) in peers.iter().enumerate() {
            let node = node as u32;
            if node != self.me && !self.is_closed(node) {
                let _ = peer.send(MeshEvent::PeerDown {
                    node: self.me,
                    reason: "the runtime shut down".into(),
                });
            }
        }
    }
}

/// A transport and event channel per node, all connected in memory.
pub(crate) fn local_mesh(nodes: u32) -> Vec<(LocalTransport, Receiver<MeshEvent>)> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..nodes).map(|_| crossbeam_channel::unbounded()).unzip();
    let peers = Arc::new(RwLock::new(senders));
    receivers
        .into_iter()
        .enumerate()
        .map(|(me, events)| (LocalTransport::new(me as u32, Arc::clone(&peers)), events))
        .collect()
}

#[cfg(all(test, not(loom)))]
mod tests {
    /// The transport refuses a job larger than the core would accept, and no
    /// smaller one: the two bounds are one.
    #[test]
    fn the_transport_and_the_core_bound_a_job_alike() {
        assert_eq!(herald_tcp::MAX_RANKS, herald_core::MAX_NODES);
    }
}
