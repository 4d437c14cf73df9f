//! How the event loop reaches other nodes: herald-tcp's [`Mesh`], or channels
//! between runtimes of one process (for tests and embedding).

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use herald_tcp::{Mesh, MeshEvent};

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
}

/// The transport of a one-node job: there is nobody to send to.
pub(crate) struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, to: u32, _frame: Vec<u8>) {
        tracing::warn!(to, "herald: frame dropped in a one-node job");
    }
}

/// Channels to the other runtimes of this process.
pub(crate) struct LocalTransport {
    pub(crate) me: u32,
    pub(crate) peers: Vec<Sender<MeshEvent>>,
    /// Links closed for good, by node.
    pub(crate) closed: Vec<AtomicBool>,
}

impl Transport for LocalTransport {
    fn send(&self, to: u32, frame: Vec<u8>) {
        if self
            .closed
            .get(to as usize)
            .is_some_and(|c| c.load(Ordering::Acquire))
        {
            return;
        }
        if let Some(peer) = self.peers.get(to as usize) {
            let _ = peer.send(MeshEvent::Frame {
                from: self.me,
                bytes: frame,
            });
        }
    }

    fn close_peer(&self, to: u32) {
        let Some(closed) = self.closed.get(to as usize) else {
            return;
        };
        // Like a TCP close: the peer sees the link go after what was sent before.
        if !closed.swap(true, Ordering::AcqRel) {
            if let Some(peer) = self.peers.get(to as usize) {
                let _ = peer.send(MeshEvent::PeerDown {
                    node: self.me,
                    reason: format!("node {} closed the link", self.me),
                });
            }
        }
    }

    fn shutdown(self: Box<Self>) {
        for (node, peer) in self.peers.iter().enumerate() {
            if node as u32 != self.me && !self.closed[node].load(Ordering::Acquire) {
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
    receivers
        .into_iter()
        .enumerate()
        .map(|(me, events)| {
            let transport = LocalTransport {
                me: me as u32,
                peers: senders.clone(),
                closed: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            };
            (transport, events)
        })
        .collect()
}
