//! Authenticated, framed, full-mesh TCP links for herald.
//!
//! Every rank of a job opens exactly one TCP connection to every other rank.
//! Each connection is authenticated before it carries a single frame: both ends
//! exchange a hello (magic bytes, protocol version, cluster id, job size, rank,
//! fresh nonce), then prove knowledge of the cluster [`Secret`] with
//! HMAC-SHA256 over both ranks and both nonces. The crate carries opaque byte
//! frames (u32 little-endian length, then the bytes); it knows nothing of the
//! protocol they encode.
//!
//! * [`Mesh::establish`] forms the mesh through rank 0 (the coordinator) and
//!   returns the mesh with a channel of [`MeshEvent`]s: frames in per-peer FIFO
//!   order, and one `PeerDown` per lost peer (crash-stop: no reconnection).
//! * [`bootstrap_from_env`] finds rank, size, coordinator and secret in the
//!   environment of herald's own launcher, Open MPI, PMI, PMIx or Slurm.
//!
//! Hung peers: an idle link sends a heartbeat every [`MeshConfig::heartbeat`]
//! (default 1 s), and a peer from which nothing arrives for
//! [`MeshConfig::peer_timeout`] (default 10 s; `HERALD_PEER_TIMEOUT_MS`) is
//! reported down like a crashed one, also when it stalls in the middle of a frame.
//! Agreement: the frame limit, heartbeat, peer timeout and the settings in
//! [`MeshConfig::agreed`] must be equal on both ends of every link, or formation
//! fails naming both values.
//!
//! Connections that fail the handshake (scanners, garbage, wrong secret, wrong
//! version or cluster, stalls) are closed and logged with `tracing::warn!`; the
//! listener keeps serving and no established link notices. A frame whose length
//! exceeds `max_frame_bytes` closes that link before anything is allocated.
//!
//! Scope of the security: the handshake authenticates peers; the frames that
//! follow are neither encrypted nor individually authenticated. An attacker who
//! can read or inject packets on the path between two ranks can read or alter
//! traffic; run multi-host jobs on a private network or inside a tunnel.
//!
//! ```
//! use std::net::TcpListener;
//! use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};
//!
//! // Rank 0 binds port 0 and tells the others where it is: no port race.
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let coordinator = listener.local_addr().unwrap();
//! let secret = Secret::random();
//! let config = |rank| MeshConfig::new(rank, 2, coordinator, secret.clone());
//! let one = std::thread::spawn({
//!     let config = config(1);
//!     move || Mesh::establish(config).unwrap()
//! });
//! let (zero, _zero_events) = Mesh::establish_with_listener(config(0), listener).unwrap();
//! let (one, one_events) = one.join().unwrap();
//! zero.send(1, b"hi".to_vec());
//! assert_eq!(one_events.recv().unwrap(), MeshEvent::Frame { from: 0, bytes: b"hi".to_vec() });
//! one.shutdown();
//! zero.shutdown();
//! ```

#![deny(missing_docs)]

mod acceptor;
mod bootstrap;
mod config;
mod error;
mod formation;
mod frame;
mod handshake;
mod link;
mod mesh;
mod secret;

pub use bootstrap::{Bootstrap, BootstrapError, BootstrapSource, bootstrap_from_env};
pub use config::{
    Agreed, DEFAULT_CLUSTER_ID, DEFAULT_ESTABLISH_TIMEOUT, DEFAULT_HEARTBEAT,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_PEER_TIMEOUT, MAX_AGREED_NAME_BYTES, MAX_AGREED_VALUES,
    MAX_CLUSTER_ID_BYTES, MeshConfig,
};
pub use error::{Disagreement, HandshakeError, TcpError};
pub use handshake::{WIRE_MAGIC, WIRE_VERSION};
pub use link::{LinkStats, PeerStats};
pub use mesh::{Mesh, MeshEvent};
pub use secret::{SECRET_LEN, Secret, SecretError};
